# `make test` is the test command (CI runs it through .ci/run): it installs Debian's chromium for the
# portal's browser tests if it is missing, then runs every test.
.PHONY: test dev generate lint bench

test:
	.ci/deps
	go test ./...

dev:
	go run ./cmd/aperture dev

generate:
	go tool buf generate

lint:
	go tool buf lint
	go vet ./...

bench:
	go run ./cmd/aperture bench
