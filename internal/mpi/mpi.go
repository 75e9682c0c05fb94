// Package mpi joins the processes that Open MPI's mpirun started, for
// data-parallel training: rank and size, sums of float buffers that come
// out bit-identical on every rank.
//
// The MPI library is opened at run time (dlopen of libmpi.so.40, or
// $MIGU_MPI_LIB), only when mpirun's environment says this process is one
// of its ranks, so migu builds and runs without MPI installed and a process
// started outside mpirun never touches it. The predefined handles are Open
// MPI's (MPI_COMM_WORLD is the address of ompi_mpi_comm_world, and so on);
// other MPI implementations are not supported.
package mpi

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

typedef int (*init_thread_fn)(int *, char ***, int, int *);
typedef int (*comm_int_fn)(void *, int *);
typedef int (*reduce_fn)(const void *, void *, int, void *, void *, int, void *);
typedef int (*bcast_fn)(void *, int, void *, int, void *);
typedef int (*finalize_fn)(void);

static struct {
	init_thread_fn init_thread;
	comm_int_fn rank, size;
	reduce_fn reduce;
	bcast_fn bcast;
	finalize_fn finalize;
	void *world, *float32, *float64, *sum;
} mpi;

// migu_mpi_open loads the library and resolves what the package uses;
// it returns NULL or the name of what failed. RTLD_GLOBAL: Open MPI's
// components, loaded later, link against libmpi's symbols.
static const char *migu_mpi_open(const char *path) {
	void *lib = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
	if (!lib) return dlerror();
#define SYM(field, name) if (!(*(void **)&mpi.field = dlsym(lib, name))) return name;
	SYM(init_thread, "MPI_Init_thread")
	SYM(rank, "MPI_Comm_rank")
	SYM(size, "MPI_Comm_size")
	SYM(reduce, "MPI_Reduce")
	SYM(bcast, "MPI_Bcast")
	SYM(finalize, "MPI_Finalize")
	SYM(world, "ompi_mpi_comm_world")
	SYM(float32, "ompi_mpi_float")
	SYM(float64, "ompi_mpi_double")
	SYM(sum, "ompi_mpi_op_sum")
#undef SYM
	return NULL;
}

// MPI_THREAD_SERIALIZED: Go may call from different OS threads, never at once.
static int migu_mpi_init(int *rank, int *size) {
	int provided, rc;
	if ((rc = mpi.init_thread(NULL, NULL, 2, &provided))) return rc;
	if ((rc = mpi.rank(mpi.world, rank))) return rc;
	return mpi.size(mpi.world, size);
}

// Sums count values into rank 0 (in place there), then broadcasts rank
// 0's result, so every rank holds the same bits.
static int migu_mpi_sum(void *buf, int count, int f64, int rank) {
	void *type = f64 ? mpi.float64 : mpi.float32;
	const void *send = rank == 0 ? (const void *)1 : buf; // MPI_IN_PLACE at the root
	int rc = mpi.reduce(send, buf, count, type, mpi.sum, 0, mpi.world);
	if (rc) return rc;
	return mpi.bcast(buf, count, type, 0, mpi.world);
}

static int migu_mpi_finalize(void) { return mpi.finalize(); }
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"unsafe"
)

// Comm is this process's place among mpirun's ranks (MPI_COMM_WORLD).
type Comm struct {
	rank, size int
}

// Launched reports whether Open MPI's mpirun started this process.
func Launched() bool { return os.Getenv("OMPI_COMM_WORLD_SIZE") != "" }

// LaunchedRank is this process's rank as mpirun announced it, or −1
// outside mpirun; it needs no MPI library.
func LaunchedRank() int {
	r, err := strconv.Atoi(os.Getenv("OMPI_COMM_WORLD_RANK"))
	if err != nil || !Launched() {
		return -1
	}
	return r
}

// Join initialises MPI when mpirun started this process and returns its
// communicator; outside mpirun it returns nil and does nothing.
func Join() (*Comm, error) {
	if !Launched() {
		return nil, nil
	}
	lib := os.Getenv("MIGU_MPI_LIB")
	if lib == "" {
		lib = "libmpi.so.40"
	}
	path := C.CString(lib)
	defer C.free(unsafe.Pointer(path))
	if msg := C.migu_mpi_open(path); msg != nil {
		return nil, fmt.Errorf("mpirun started migu but Open MPI's library %s cannot be used: %s (install openmpi-bin and libopenmpi-dev, or set MIGU_MPI_LIB)", lib, C.GoString(msg))
	}
	var rank, size C.int
	if rc := C.migu_mpi_init(&rank, &size); rc != 0 {
		return nil, fmt.Errorf("MPI_Init_thread failed with error %d", int(rc))
	}
	if want, _ := strconv.Atoi(os.Getenv("OMPI_COMM_WORLD_SIZE")); want != int(size) {
		return nil, fmt.Errorf("mpirun announced %d ranks, MPI_COMM_WORLD has %d", want, int(size))
	}
	return &Comm{rank: int(rank), size: int(size)}, nil
}

// Rank is this process's index, 0 … Size−1.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *Comm) Size() int { return c.size }

// chunk bounds one MPI call's element count (MPI counts are C ints).
const chunk = 1 << 28

// SumFloat32 replaces buf on every rank by the element-wise sum over the
// ranks. The sum is taken on rank 0 and broadcast, so every rank gets the
// same bits whatever order the reduction used.
func (c *Comm) SumFloat32(buf []float32) error { return sum(c, buf, 0) }

// SumFloat64 is SumFloat32 for float64 values (losses, token counts).
func (c *Comm) SumFloat64(buf []float64) error { return sum(c, buf, 1) }

// sum is SumFloat32 and SumFloat64 in chunks of at most chunk values;
// f64 tells the C side the element type.
func sum[T float32 | float64](c *Comm, buf []T, f64 C.int) error {
	for lo := 0; lo < len(buf); lo += chunk {
		part := buf[lo:min(lo+chunk, len(buf))]
		if rc := C.migu_mpi_sum(unsafe.Pointer(&part[0]), C.int(len(part)), f64, C.int(c.rank)); rc != 0 {
			return fmt.Errorf("MPI sum of %d values failed with error %d", len(part), int(rc))
		}
	}
	return nil
}

// Finalize shuts MPI down; call it once, after the last collective.
func (c *Comm) Finalize() error {
	if rc := C.migu_mpi_finalize(); rc != 0 {
		return fmt.Errorf("MPI_Finalize failed with error %d", int(rc))
	}
	return nil
}
