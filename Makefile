# `make test` is the test command (CI runs it through .ci/run): the static checks, then every test.
# It installs Debian's chromium for the portal's browser tests if it is missing. The broker's packages
# run under the race detector instead of (not as well as) a plain run, which keeps CI's time in bounds.
.PHONY: test check vet staticcheck tidy breaking dev generate lint bench

# Every package outside broker/; the broker's run with -race below.
PLAIN_PKGS = $(shell go list ./... | grep -v -e '/aperture/broker$$' -e '/aperture/broker/')

test: check
	.ci/deps
	go test -timeout 25m $(PLAIN_PKGS)
	go test -timeout 25m -race ./broker/...

check: vet staticcheck tidy breaking

vet:
	go vet ./...

# staticcheck with its default checks and no exclusion (a staticcheck.conf would list any, with the reason).
staticcheck:
	go tool staticcheck ./...

# go.mod and go.sum say exactly what the code imports: no missing, stale or mislabelled requirement.
tidy:
	go mod tidy -diff

# The proto module stays compatible with the previous commit's (.ci/breaking says how on a shallow clone).
breaking:
	.ci/breaking

dev:
	go run ./cmd/aperture dev

generate:
	go tool buf generate

lint:
	go tool buf lint
	go vet ./...

bench:
	go run ./cmd/aperture bench
