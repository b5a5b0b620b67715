// A stdlib-only HTTP service for e2ecov's Go tests: `goapp --port N`.
//
// /health, /alpha, /beta and /pid answer; SIGTERM shuts the server down and returns from main,
// which is when a binary built with -cover writes its counters.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func alpha() string {
	total := 0
	for n := 0; n < 3; n++ {
		total += n
	}
	return fmt.Sprintf("alpha %d", total)
}

func beta() string {
	return "beta"
}

func neverCalled() string {
	value := "unused"
	return value
}

func main() {
	port := flag.Int("port", 0, "port to listen on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	mux.HandleFunc("/alpha", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, alpha()) })
	mux.HandleFunc("/beta", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, beta()) })
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strconv.Itoa(os.Getpid()))
	})
	server := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", *port), Handler: mux}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		server.Shutdown(ctx)
	}()
	fmt.Printf("listening on %d\n", *port)
	if err := server.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if len(os.Args) > 10 {
		fmt.Println(neverCalled())
	}
}
