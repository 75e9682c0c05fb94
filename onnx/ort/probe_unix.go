//go:build !windows

package ort

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// The first two members of OrtApiBase, stable since ORT 1.0.
typedef struct {
	const void *(*GetApi)(uint32_t version);
	const char *(*GetVersionString)(void);
} migu_api_base;

typedef const migu_api_base *(*migu_get_api_base)(void);

enum { PROBE_OK, PROBE_DLOPEN, PROBE_NO_SYMBOL, PROBE_NO_BASE, PROBE_OLD_API };

static void migu_copy(char *dst, size_t n, const char *src) {
	if (src == NULL) return;
	strncpy(dst, src, n - 1);
	dst[n - 1] = 0;
}

// migu_probe loads the library the way onnxruntime_go will (dlopen with
// RTLD_LAZY) and asks it for its version and for the C API version. On
// success the handle stays open, so the binding's own dlopen reuses it; on
// failure it is closed. msg receives dlerror() text, ver the version.
static int migu_probe(const char *path, uint32_t api, char *ver, size_t vn, char *msg, size_t mn) {
	void *h = dlopen(path, RTLD_LAZY);
	if (h == NULL) {
		migu_copy(msg, mn, dlerror());
		return PROBE_DLOPEN;
	}
	void *sym = dlsym(h, "OrtGetApiBase");
	if (sym == NULL) {
		migu_copy(msg, mn, dlerror());
		dlclose(h);
		return PROBE_NO_SYMBOL;
	}
	const migu_api_base *base = ((migu_get_api_base)sym)();
	if (base == NULL) {
		dlclose(h);
		return PROBE_NO_BASE;
	}
	if (base->GetVersionString != NULL) migu_copy(ver, vn, base->GetVersionString());
	if (base->GetApi == NULL || base->GetApi(api) == NULL) {
		dlclose(h);
		return PROBE_OLD_API;
	}
	return PROBE_OK;
}
*/
import "C"

import (
	"unsafe"

	"github.com/migu-ml/migu/internal/badinput"
)

// probe checks that path is an ONNX Runtime library serving apiVersion and
// returns its version string, before onnxruntime_go touches it: the binding
// reports these failures without naming the version, and keeps no usable
// state to retry with afterwards.
func probe(path string) (string, error) {
	cPath := C.CString(path)
	defer C.free(unsafe.Pointer(cPath))
	var ver [64]C.char
	var msg [512]C.char
	rc := C.migu_probe(cPath, C.uint32_t(apiVersion), &ver[0], C.size_t(len(ver)), &msg[0], C.size_t(len(msg)))
	version := C.GoString(&ver[0])
	detail := C.GoString(&msg[0])
	switch rc {
	case C.PROBE_OK:
		return version, nil
	case C.PROBE_DLOPEN:
		return "", badinput.Errorf("cannot load ONNX Runtime library %s: %s; %s", path, detail, howToGet)
	case C.PROBE_NO_SYMBOL, C.PROBE_NO_BASE:
		return "", badinput.Errorf("%s is not an ONNX Runtime library (it has no usable OrtGetApiBase); %s", path, howToGet)
	default:
		if version == "" {
			version = "unknown"
		}
		return "", badinput.Errorf("ONNX Runtime library %s (version %s) is too old: onnxruntime_go v1.27.0 needs C API version %d, i.e. ONNX Runtime 1.%d or newer; %s", path, version, apiVersion, apiVersion, howToGet)
	}
}
