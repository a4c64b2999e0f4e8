# Convenience targets; the test command itself is plain `go test ./...` so a machine with only Go runs it.
.PHONY: test dev generate lint bench

test:
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
