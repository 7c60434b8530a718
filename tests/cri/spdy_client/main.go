// A remotecommand (v4.channel.k8s.io) exec client over SPDY/3.1, the way client-go's
// SPDY executor talks to a kubelet streaming server, built on Debian's moby/spdystream.
// Usage: spdy_client URL STDIN [WIDTHxHEIGHT]; prints {"stdout","stderr","status"} as JSON.
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
	"sync"
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
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		fail("dial: %v", err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"+
		"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n",
		u.Path, u.Host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		fail("upgrade response: %v", err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("X-Stream-Protocol-Version") != "v4.channel.k8s.io" {
		fail("upgrade refused: %s %v", resp.Status, resp.Header)
	}
	if br.Buffered() != 0 {
		fail("server spoke before the client opened streams")
	}
	sc, err := spdystream.NewConnection(conn, false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go sc.Serve(spdystream.NoOpStreamHandler)
	open := func(kind string) *spdystream.Stream {
		s, err := sc.CreateStream(http.Header{"Streamtype": {kind}}, nil, false)
		if err != nil {
			fail("create %s: %v", kind, err)
		}
		if err := s.WaitTimeout(10 * time.Second); err != nil {
			fail("reply %s: %v", kind, err)
		}
		return s
	}
	tty := len(os.Args) > 3
	errStream := open("error")
	stdin := open("stdin")
	stdout := open("stdout")
	var stderr, resize *spdystream.Stream
	if tty {
		resize = open("resize")
		var w, h int
		fmt.Sscanf(os.Args[3], "%dx%d", &w, &h)
		json.NewEncoder(resize).Encode(map[string]int{"Width": w, "Height": h})
		time.Sleep(300 * time.Millisecond) // let the size land before the shell reads it
	} else {
		stderr = open("stderr")
	}
	out := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	read := func(name string, s *spdystream.Stream) {
		defer wg.Done()
		b, _ := io.ReadAll(s)
		mu.Lock()
		out[name] = string(b)
		mu.Unlock()
	}
	wg.Add(2)
	go read("stdout", stdout)
	go read("status", errStream)
	if stderr != nil {
		wg.Add(1)
		go read("stderr", stderr)
	}
	stdin.Write([]byte(os.Args[2]))
	stdin.Close() // half-close: the command sees EOF
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(out)
}
