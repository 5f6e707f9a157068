// Command pubsub-server serves Google's in-memory Pub/Sub server for tests (pstest) on loopback, so
// that Pub/Sub clients (google-cloud-pubsub, Beam's ReadFromPubSub) reach it with
// PUBSUB_EMULATOR_HOST=<its address>. It prints one line of JSON, {"emulator_host": "127.0.0.1:PORT"},
// once it accepts connections, and stops on SIGTERM or SIGINT. Topics and subscriptions live in memory.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any free one)")
	flag.Parse()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	server := pstest.NewServerWithAddress(fmt.Sprintf("127.0.0.1:%d", *port))
	fmt.Printf("{\"emulator_host\": %q}\n", server.Addr)
	<-stop
	server.Close()
}
