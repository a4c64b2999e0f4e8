package main

// Temporary: keeps go.mod's requirements while the packages that use them are written in parallel.
import (
	_ "buf.build/go/protovalidate"
	_ "buf.build/go/protoyaml"
	_ "cel.dev/cel-go/cel"
	_ "github.com/hashicorp/vault/api"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/transparency-dev/merkle"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/mod/sumdb/note"
	_ "google.golang.org/grpc"
	_ "google.golang.org/grpc/health"
	_ "google.golang.org/grpc/reflection"
)

func main() {}
