# The one aperture binary in a distroless image: static (CGO_ENABLED=0), non-root, CA certificates
# included (distroless/static has ca-certificates and tzdata). deploy/k8s runs it as
# /usr/local/bin/aperture; go test ./deploy/k8s checks that this file builds that path.
#
#   docker build -t aperture:dev .
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags='-s -w' -o /out/aperture ./cmd/aperture

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/aperture /usr/local/bin/aperture
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/aperture"]
CMD ["--help"]
