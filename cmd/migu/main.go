// Command migu fine-tunes language models exported to ONNX, one task after
// another, with MIGU's magnitude-based gradient masks. Each command lives in
// its own file and only parses flags, calls a package and prints.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/migu-ml/migu/internal/badinput"
	"github.com/migu-ml/migu/internal/mpi"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status: 0 on success,
// 2 for bad input (a flag, a file, a field), 1 for any other failure. The
// settings an error names are spelled as their flags (flagOf).
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		bad := badinput.Is(err)
		// Every rank of an mpirun job finds the same bad input: rank 0 says it.
		if !bad || mpi.LaunchedRank() <= 0 {
			fmt.Fprintf(stderr, "migu: %s\n", badinput.Rename(err, flagOf))
		}
		if bad {
			return 2
		}
		return 1
	}
	return 0
}
