package proxy

import (
	"crypto/sha256"
	"testing"
)

// TestRecordedModel: a model name stays in the record as the app sent
// it; one that holds a credential is replaced whole by notShown.
func TestRecordedModel(t *testing.T) {
	const hand = "till_handmade7"
	cs := clientSet{{name: "web", digest: sha256.Sum256([]byte(hand))}}
	forms := echoForms([]string{"plainroutekey0123456789abcdef"})
	tests := []struct{ model, want string }{
		{"", ""},
		{"gpt-4o-mini", "gpt-4o-mini"},
		{"claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"},
		{"models/gemini-2.5-pro", "models/gemini-2.5-pro"},
		{"ft:gpt-4o-mini-2024-07-18:acme::A1b2C3d4", "ft:gpt-4o-mini-2024-07-18:acme::A1b2C3d4"},
		{"meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"},
		{"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0",
			"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"},
		{"till_ModelFieldToken0123456789abcdefghijKLMNO", notShown},
		{"x/till%5FModelFieldToken0123456789abcdefghijKLMNO", notShown},
		{hand, notShown},
		{"sk-ant-api03-Ab12Cd34Ef56Gh78Ij90Kl12", notShown},
		{"models/AIzaSyAb12Cd34Ef56Gh78Ij90Kl12Mn34Op5", notShown},
		{"plainroutekey0123456789abcdef", notShown},
		{"gpt-plainroutekey0123456789abcdef", notShown},
	}
	for _, tt := range tests {
		if got := recordedModel(tt.model, cs, forms); got != tt.want {
			t.Errorf("recordedModel(%q): got %q, want %q", tt.model, got, tt.want)
		}
	}
}
