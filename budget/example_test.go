package budget_test

import (
	"context"
	"fmt"
	"time"

	"github.com/tillgw/till/budget"
)

// A request reserves its max_tokens, is forwarded, then settles what the
// response reported.
func Example() {
	daily := &budget.Spec{Name: "web-daily", Window: budget.Window{Calendar: "day"}, Tokens: 2000}
	store := budget.NewMemory()
	ctx, now := context.Background(), time.Date(2026, 11, 3, 18, 0, 0, 0, time.UTC)
	charges := []budget.Charge{{Spec: daily, Counter: "web"}}

	ticket, denial, err := store.Take(ctx, now, charges, 1000)
	fmt.Println(denial, err)
	// ... forward the request, read its usage ...
	store.Settle(ctx, now, ticket, 2400, 0.01)

	_, denial, _ = store.Take(ctx, now, charges, 1000)
	fmt.Printf("%s %s %s retry after %v\n", denial.Budget, denial.Counter, denial.Kind, denial.RetryAfter)
	rows, _ := store.Usage(ctx, now, []*budget.Spec{daily})
	fmt.Printf("%+v until %s\n", rows[0].Used, rows[0].Reset.Format(time.RFC3339))
	// Output:
	// <nil> <nil>
	// web-daily web tokens retry after 6h0m0s
	// 2400 until 2026-11-04T00:00:00Z
}
