// A port-forward (portforward.k8s.io) client over SPDY/3.1, as client-go's SPDY port
// forwarder talks to a kubelet streaming server, built on Debian's moby/spdystream.
// Usage: spdy_portforward URL PORT PAYLOAD; sends PAYLOAD, half-closes, and prints
// {"data","error"} as JSON: what came back on the data and error streams.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/moby/spdystream"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func main() {
	u, err := url.Parse(os.Args[1])
	if err != nil {
		fail("bad url: %v", err)
	}
	port, payload := os.Args[2], os.Args[3]
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		fail("dial: %v", err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"+
		"X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n", u.Path, u.Host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		fail("upgrade response: %v", err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("X-Stream-Protocol-Version") != "portforward.k8s.io" {
		fail("upgrade refused: %s %v", resp.Status, resp.Header)
	}
	sc, err := spdystream.NewConnection(conn, false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go sc.Serve(spdystream.NoOpStreamHandler)
	open := func(kind string) *spdystream.Stream {
		h := http.Header{"Streamtype": {kind}, "Port": {port}, "Requestid": {"0"}}
		s, err := sc.CreateStream(h, nil, false)
		if err != nil {
			fail("create %s: %v", kind, err)
		}
		if err := s.WaitTimeout(10 * time.Second); err != nil {
			fail("reply %s: %v", kind, err)
		}
		return s
	}
	errStream := open("error")
	data := open("data")
	if _, err := data.Write([]byte(payload)); err != nil {
		fail("write: %v", err)
	}
	data.Close() // half-close: the server's side sees EOF
	done := make(chan []byte)
	go func() { b, _ := io.ReadAll(data); done <- b }()
	var got []byte
	select {
	case got = <-done:
	case <-time.After(15 * time.Second):
		fail("no end of the data stream")
	}
	errc := make(chan []byte)
	go func() { b, _ := io.ReadAll(errStream); errc <- b }()
	var errText []byte
	select {
	case errText = <-errc:
	case <-time.After(5 * time.Second):
	}
	out, _ := json.Marshal(map[string]string{"data": string(got), "error": string(errText)})
	fmt.Println(string(out))
}
