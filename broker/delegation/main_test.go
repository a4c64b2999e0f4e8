package delegation_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine running: every background loop must end
// with the Close or Shutdown of what started it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
