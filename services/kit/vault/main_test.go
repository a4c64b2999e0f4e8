package vault_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine running: token and certificate renewal
// loops must end with Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
