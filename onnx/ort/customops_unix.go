//go:build !windows

package ort

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// The first three members of OrtApi (stable since ORT 1.0: ORT only appends)
// and of OrtApiBase, enough to read an error a registration returns.
typedef struct {
	void *(*CreateStatus)(int code, const char *msg);
	int (*GetErrorCode)(const void *status);
	const char *(*GetErrorMessage)(const void *status);
} migu_api_head;

typedef struct {
	const migu_api_head *(*GetApi)(unsigned version);
	const char *(*GetVersionString)(void);
} migu_api_base2;

typedef const migu_api_base2 *(*migu_get_base)(void);
typedef void *(*migu_register_fn)(void *options, const migu_api_base2 *base);

enum { REG_OK, REG_NO_ORT, REG_DLOPEN, REG_NO_SYMBOL, REG_FAILED };

// migu_register opens a custom-op library (kept open for the process's
// life: the sessions it serves hold its kernels) and calls its
// RegisterCustomOps(options, OrtGetApiBase()), the entry point ORT's own
// RegisterCustomOpsLibrary calls. msg receives the error text.
static int migu_register(const char *ort, const char *lib, void *options, unsigned api, char *msg, size_t mn) {
	msg[0] = 0;
	void *oh = dlopen(ort, RTLD_LAZY | RTLD_NOLOAD);
	if (oh == NULL) return REG_NO_ORT;
	migu_get_base get = (migu_get_base)dlsym(oh, "OrtGetApiBase");
	if (get == NULL) return REG_NO_ORT;
	const migu_api_base2 *base = get();
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		if (e != NULL) { strncpy(msg, e, mn - 1); msg[mn - 1] = 0; }
		return REG_DLOPEN;
	}
	migu_register_fn reg = (migu_register_fn)dlsym(h, "RegisterCustomOps");
	if (reg == NULL) return REG_NO_SYMBOL;
	void *status = reg(options, base);
	if (status == NULL) return REG_OK;
	const migu_api_head *a = base->GetApi(api);
	if (a != NULL) { strncpy(msg, a->GetErrorMessage(status), mn - 1); msg[mn - 1] = 0; }
	return REG_FAILED;
}

enum { STR_OK, STR_DLOPEN, STR_NO_SYMBOL };

// migu_lib_string opens lib and copies what its exported
// `const char *sym(void)` returns into out.
static int migu_lib_string(const char *lib, const char *sym, char *out, size_t n) {
	out[0] = 0;
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		if (e != NULL) { strncpy(out, e, n - 1); out[n - 1] = 0; }
		return STR_DLOPEN;
	}
	typedef const char *(*str_fn)(void);
	str_fn f = (str_fn)dlsym(h, sym);
	if (f == NULL) { dlclose(h); return STR_NO_SYMBOL; }
	const char *v = f();
	if (v != NULL) { strncpy(out, v, n - 1); out[n - 1] = 0; }
	dlclose(h);
	return STR_OK;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/migu-ml/migu/internal/badinput"
)

// sessionOptionsPtr is the OrtSessionOptions behind onnxruntime_go's
// wrapper, whose only field (v1.27.0, pinned in go.mod) is that pointer:
// the binding has no call that registers a custom-op library.
func sessionOptionsPtr(so *ortgo.SessionOptions) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(so))
}

// The wrapper must stay one pointer wide for sessionOptionsPtr to hold.
var _ [unsafe.Sizeof(uintptr(0)) - unsafe.Sizeof(ortgo.SessionOptions{})]struct{}
var _ [unsafe.Sizeof(ortgo.SessionOptions{}) - unsafe.Sizeof(uintptr(0))]struct{}

// registerCustomOps registers the custom operators of the shared library
// at path with so.
func registerCustomOps(so *ortgo.SessionOptions, path string) error {
	cOrt := C.CString(LibraryPath())
	defer C.free(unsafe.Pointer(cOrt))
	cLib := C.CString(path)
	defer C.free(unsafe.Pointer(cLib))
	var msg [512]C.char
	rc := C.migu_register(cOrt, cLib, sessionOptionsPtr(so), C.uint(apiVersion), &msg[0], C.size_t(len(msg)))
	detail := C.GoString(&msg[0])
	switch rc {
	case C.REG_OK:
		return nil
	case C.REG_NO_ORT:
		return fmt.Errorf("custom-op library %s: ONNX Runtime is not loaded", path)
	case C.REG_DLOPEN:
		return badinput.Errorf("cannot load custom-op library %s: %s", path, detail)
	case C.REG_NO_SYMBOL:
		return badinput.Errorf("%s is not an ONNX Runtime custom-op library (it exports no RegisterCustomOps)", path)
	default:
		return fmt.Errorf("registering the custom ops of %s: %s", path, detail)
	}
}

// LibraryString loads the shared library at path and returns what its
// exported function symbol, of C type `const char *symbol(void)`, returns:
// how migu's kernel libraries report their op-set version. found is false
// when the library exports no such symbol; a library that cannot be loaded
// is a bad-input error.
func LibraryString(path, symbol string) (value string, found bool, err error) {
	cLib := C.CString(path)
	defer C.free(unsafe.Pointer(cLib))
	cSym := C.CString(symbol)
	defer C.free(unsafe.Pointer(cSym))
	var out [256]C.char
	switch C.migu_lib_string(cLib, cSym, &out[0], C.size_t(len(out))) {
	case C.STR_OK:
		return C.GoString(&out[0]), true, nil
	case C.STR_NO_SYMBOL:
		return "", false, nil
	default:
		return "", false, badinput.Errorf("cannot load custom-op library %s: %s", path, C.GoString(&out[0]))
	}
}
