package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/aperture-gov/aperture/services/kit/mtls"
)

// passProxy is a bare transparent gRPC proxy: mTLS towards its callers (as the broker's identity, so
// an agency's client reaches it exactly as it reaches the broker) and mTLS towards one upstream (as the
// broker calls an authority), one upstream connection like the broker's authority pool, and nothing in
// between: no decision, no log, no decoding. Messages travel as the bytes gRPC received, without a
// copy. It is what `aperture bench` measures the broker against: the cost of a second mTLS gRPC hop on
// the same cores.
type passProxy struct {
	srv      *grpc.Server
	upstream *grpc.ClientConn
	lis      net.Listener
	unary    map[string]bool // full method names known to be unary: forwarded with one Invoke
	done     chan struct{}
}

// rawFrame is one gRPC message as bytes; rawCodec moves it between the two legs without parsing.
type rawFrame struct{ data mem.BufferSlice }

// rawCodec is a CodecV2 that keeps the received buffers (taking a reference) and hands them to the
// other leg, which frees them once written. It is named "proto" so that neither leg changes the
// content-subtype: the upstream still sees application/grpc.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*rawFrame)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	out := f.data
	f.data = nil // gRPC frees the buffers once written
	return out, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	data.Ref() // gRPC frees data when Unmarshal returns; the frame keeps it until Marshal
	f.data.Free()
	f.data = data
	return nil
}

// free returns a frame's buffers that were never handed on (an error path).
func (f *rawFrame) free() {
	f.data.Free()
	f.data = nil
}

// startPassProxy listens on addr and forwards every call to upstream. serverSrc is the identity it
// presents to callers; clientSrc the one it presents upstream, whose certificate must be upstreamID.
// Unary methods listed in services are forwarded with one Invoke each (what a gRPC proxy specialised
// for them does); any other method is forwarded as a bidirectional stream.
func startPassProxy(addr, upstream, upstreamID string, serverSrc, clientSrc mtls.Source, services ...grpc.ServiceDesc) (*passProxy, error) {
	cc, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(credentials.NewTLS(mtls.ClientConfig(clientSrc, upstreamID))),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		return nil, fmt.Errorf("proxy upstream: %w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		cc.Close()
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &passProxy{upstream: cc, lis: lis, unary: map[string]bool{}, done: make(chan struct{})}
	for _, sd := range services {
		for _, m := range sd.Methods {
			p.unary["/"+sd.ServiceName+"/"+m.MethodName] = true
		}
	}
	p.srv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(mtls.ServerConfig(serverSrc))),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute}),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.UnknownServiceHandler(p.handle),
	)
	go func() {
		defer close(p.done)
		_ = p.srv.Serve(lis) // ends with Stop
	}()
	return p, nil
}

// Addr is where the proxy listens.
func (p *passProxy) Addr() string { return p.lis.Addr().String() }

// Close stops the proxy and its upstream connection.
func (p *passProxy) Close() {
	p.srv.Stop()
	<-p.done
	p.upstream.Close()
}

// handle forwards one call: metadata in, the messages both ways, then header, trailer and status back.
func (p *passProxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "proxy: no method")
	}
	ctx := ss.Context()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		out := md.Copy()
		delete(out, ":authority")
		delete(out, "user-agent")
		delete(out, "content-type")
		for k := range out {
			if strings.HasPrefix(k, "grpc-") {
				delete(out, k)
			}
		}
		ctx = metadata.NewOutgoingContext(ctx, out)
	}
	if p.unary[method] {
		return p.forwardUnary(ctx, method, ss)
	}
	return p.forwardStream(ctx, method, ss)
}

func (p *passProxy) forwardUnary(ctx context.Context, method string, ss grpc.ServerStream) error {
	var req, resp rawFrame
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	var header, trailer metadata.MD
	err := p.upstream.Invoke(ctx, method, &req, &resp, grpc.Header(&header), grpc.Trailer(&trailer))
	req.free() // already handed on unless the call failed before sending
	if len(header) > 0 {
		_ = ss.SetHeader(header)
	}
	ss.SetTrailer(trailer)
	if err != nil {
		resp.free()
		return err // the upstream's status, as it is
	}
	return ss.SendMsg(&resp)
}

var bidi = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

func (p *passProxy) forwardStream(ctx context.Context, method string, ss grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := p.upstream.NewStream(ctx, bidi, method)
	if err != nil {
		return err
	}
	// Caller to upstream in the background, upstream to caller here. The background half ends at the
	// caller's half-close, or when this handler returns and gRPC ends the server stream.
	go func() {
		for {
			var f rawFrame
			if err := ss.RecvMsg(&f); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(&f); err != nil {
				f.free()
				return // the upstream ended the call: its status comes from RecvMsg below
			}
		}
	}()
	header, err := cs.Header()
	if err != nil {
		return err
	}
	if err := ss.SendHeader(header); err != nil {
		return err
	}
	for {
		var f rawFrame
		if err := cs.RecvMsg(&f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			f.free()
			return err
		}
	}
}
