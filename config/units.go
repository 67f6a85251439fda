package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Rate is a request rate such as 10 per second. The zero Rate is
// unlimited.
type Rate struct {
	// Count is the number of requests allowed per Per.
	Count int
	// Per is time.Second, time.Minute or time.Hour.
	Per time.Duration
}

// IsZero reports whether the rate is unlimited.
func (r Rate) IsZero() bool { return r.Count == 0 }

// String formats the rate as it is written in the config ("10/s"), or
// "unlimited".
func (r Rate) String() string {
	if r.IsZero() {
		return "unlimited"
	}
	switch r.Per {
	case time.Second:
		return strconv.Itoa(r.Count) + "/s"
	case time.Minute:
		return strconv.Itoa(r.Count) + "/m"
	case time.Hour:
		return strconv.Itoa(r.Count) + "/h"
	}
	return fmt.Sprintf("%d/%s", r.Count, r.Per)
}

// ParseRate parses "N/s", "N/m" or "N/h" with N at least 1.
func ParseRate(s string) (Rate, error) {
	n, unit, ok := strings.Cut(s, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 || n[0] == '+' {
		return Rate{}, errors.New("must be a rate such as 10/s, 100/m or 1000/h")
	}
	switch unit {
	case "s":
		return Rate{count, time.Second}, nil
	case "m":
		return Rate{count, time.Minute}, nil
	case "h":
		return Rate{count, time.Hour}, nil
	}
	return Rate{}, errors.New("must be a rate such as 10/s, 100/m or 1000/h")
}

// ParseDuration is time.ParseDuration plus a "d" unit of 24 hours, alone
// or mixed with others: "90d", "1d12h". Days must be whole numbers.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("invalid duration %q (e.g. 30s, 12h, 90d, 1d12h)", s)
	if !strings.Contains(s, "d") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, bad
		}
		return d, nil
	}
	rest, sign := s, ""
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		sign, rest = rest[:1], rest[1:]
	}
	// Rewrite every "Nd" as hours and let time.ParseDuration do the rest,
	// including its overflow checks.
	var b strings.Builder
	b.WriteString(sign)
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		num := rest[:i]
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		unit := rest[i:j]
		if num == "" || unit == "" {
			return 0, bad
		}
		if unit == "d" {
			days, err := strconv.ParseUint(num, 10, 64)
			if err != nil || days > math.MaxInt64/uint64(24*time.Hour) {
				return 0, bad
			}
			b.WriteString(strconv.FormatUint(days*24, 10) + "h")
		} else {
			b.WriteString(num + unit)
		}
		rest = rest[j:]
	}
	d, err := time.ParseDuration(b.String())
	if err != nil {
		return 0, bad
	}
	return d, nil
}

var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1000,
	"mb":  1000 * 1000,
	"gb":  1000 * 1000 * 1000,
	"tb":  1000 * 1000 * 1000 * 1000,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseSize parses a byte count: a whole number with an optional unit, B,
// KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024),
// in any case and with an optional space: "10MB", "512 KiB", "1048576".
func ParseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimPrefix(s[i:], " "))]
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if i == 0 || !ok || err != nil {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}
