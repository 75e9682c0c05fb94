package safetensors

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/migu-ml/migu/internal/badinput"
)

func TestOpenMalformed(t *testing.T) {
	f32 := func(name, shape, offsets string) string {
		return `"` + name + `":{"dtype":"F32","shape":` + shape + `,"data_offsets":` + offsets + `}`
	}
	hugeLen := make([]byte, 16)
	binary.LittleEndian.PutUint64(hugeLen, 200_000_000)
	pastEnd := make([]byte, 16)
	binary.LittleEndian.PutUint64(pastEnd, 1000)

	cases := []struct {
		name   string
		file   []byte
		tensor string // FormatError.Tensor
		want   string // substring of the message
	}{
		{"empty file", nil, "", "too short for the 8-byte header length"},
		{"short file", []byte{1, 2, 3, 4, 5}, "", "5 bytes, too short"},
		{"header past end", pastEnd, "", "header length 1000 runs past the end of the 16-byte file"},
		{"header over limit", hugeLen, "", "exceeds the 100000000-byte limit"},
		{"header too short", rawFile("{", nil), "", "too short for a JSON object"},
		{"not utf8", rawFile("{\"\xff\":1}", nil), "", "not valid UTF-8"},
		{"not an object", rawFile("[1,2]", nil), "", "does not start with '{'"},
		{"leading space", rawFile(" {}", nil), "", "does not start with '{'"},
		{"truncated json", rawFile(`{"a":{"dtype"`, nil), "", "not valid JSON"},
		{"missing colon", rawFile(`{"a" 1}`, nil), "", "not valid JSON"},
		{"trailing garbage", rawFile(`{} x`, nil), "", "not valid JSON"},
		{"second object", rawFile(`{}{}`, nil), "", "after the closing brace"},
		{"entry is number", rawFile(`{"a":5}`, nil), "a", "header entry is 5, want an object"},
		{"entry is array", rawFile(`{"a":[1]}`, nil), "a", "header entry is an array"},
		{"entry is null", rawFile(`{"a":null}`, nil), "a", "header entry is null"},
		{"unknown dtype", rawFile(`{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}`, []byte{0}), "w", `unknown dtype "Q4" (known: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)`},
		{"lowercase dtype", rawFile(`{"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `unknown dtype "f32"`},
		{"dtype not string", rawFile(`{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "dtype is 4, want a string"},
		{"missing dtype", rawFile(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "missing field dtype"},
		{"missing shape", rawFile(`{"w":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4)), "w", "missing field shape"},
		{"missing offsets", rawFile(`{"w":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), "w", "missing field data_offsets"},
		{"unknown field", rawFile(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, make([]byte, 4)), "w", `unknown field "x"`},
		{"field in other case", rawFile(`{"w":{"DTYPE":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `unknown field "DTYPE"`},
		{"field twice", rawFile(`{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `field "dtype" appears twice`},
		{"shape not array", rawFile(`{"w":{"dtype":"F32","shape":4,"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "shape is 4, want an array"},
		{"shape null", rawFile(`{"w":{"dtype":"F32","shape":null,"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "shape is null"},
		{"negative dim", rawFile(`{"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "shape[1]: -1 is negative"},
		{"fractional dim", rawFile(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "shape[0]: 1.5 is not a non-negative integer"},
		{"exponent dim", rawFile(`{"w":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "shape[0]: 1e0 is not"},
		{"string dim", rawFile(`{"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", `shape[0]: the string "1" is not`},
		{"dim over 2^64", rawFile(`{"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "18446744073709551616 is too large"},
		{"dim over int64", rawFile(`{"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "9223372036854775808 is too large"},
		{"shape overflows", rawFile(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, make([]byte, 4)), "w", "shape [4294967296, 4294967296] of F32 overflows 64 bits"},
		{"shape overflows by dtype size", rawFile(`{"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}`, make([]byte, 8)), "w", "overflows 64 bits"},
		{"size mismatch", rawFile(`{`+f32("w", "[2,3]", "[0,20]")+`}`, make([]byte, 20)), "w", "data_offsets [0, 20] span 20 bytes, but shape [2, 3] of F32 needs 24"},
		{"offsets one element", rawFile(`{`+f32("w", "[1]", "[4]")+`}`, make([]byte, 4)), "w", "data_offsets has 1 elements"},
		{"offsets three elements", rawFile(`{`+f32("w", "[1]", "[0,4,8]")+`}`, make([]byte, 4)), "w", "data_offsets has 3 elements"},
		{"offsets not array", rawFile(`{`+f32("w", "[1]", `"0-4"`)+`}`, make([]byte, 4)), "w", "data_offsets is the string \"0-4\""},
		{"offsets reversed", rawFile(`{`+f32("w", "[0]", "[4,0]")+`}`, make([]byte, 4)), "w", "data_offsets [4, 0] begin after they end"},
		{"negative offset", rawFile(`{`+f32("w", "[1]", "[-4,0]")+`}`, make([]byte, 4)), "w", "data_offsets begin: -4 is negative"},
		{"offsets past data", rawFile(`{`+f32("w", "[2]", "[0,8]")+`}`, make([]byte, 4)), "w", "data_offsets [0, 8] run past the 4-byte data section"},
		{"huge offsets", rawFile(`{`+f32("w", "[1]", "[9223372036854775800,9223372036854775804]")+`}`, make([]byte, 4)), "w", "run past the 4-byte data section"},
		{"overlap", rawFile(`{`+f32("a", "[2]", "[0,8]")+`,`+f32("b", "[2]", "[4,12]")+`}`, make([]byte, 12)), "b", `data_offsets [4, 12] overlap tensor "a" at [0, 8]`},
		{"same range twice", rawFile(`{`+f32("a", "[1]", "[0,4]")+`,`+f32("b", "[1]", "[0,4]")+`}`, make([]byte, 4)), "b", `overlap tensor "a"`},
		{"gap", rawFile(`{`+f32("a", "[1]", "[0,4]")+`,`+f32("b", "[1]", "[8,12]")+`}`, make([]byte, 12)), "b", "leave bytes [4, 8) of the data section to no tensor"},
		{"gap at start", rawFile(`{`+f32("a", "[1]", "[4,8]")+`}`, make([]byte, 8)), "a", "leave bytes [0, 4)"},
		{"trailing data", rawFile(`{`+f32("a", "[1]", "[0,4]")+`}`, make([]byte, 10)), "", "data section is 10 bytes but the tensors cover 4; 6 trailing bytes"},
		{"data without tensors", rawFile(`{}`, make([]byte, 3)), "", "3 trailing bytes"},
		{"duplicate tensor", rawFile(`{`+f32("a", "[1]", "[0,4]")+`,`+f32("a", "[1]", "[4,8]")+`}`, make([]byte, 8)), "a", "tensor appears twice in the header"},
		{"duplicate escaped tensor", rawFile(`{`+f32("a", "[1]", "[0,4]")+`,`+f32(`\u0061`, "[1]", "[4,8]")+`}`, make([]byte, 8)), "a", "appears twice"},
		{"metadata twice", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil), "", "header has __metadata__ twice"},
		{"metadata not object", rawFile(`{"__metadata__":"x"}`, nil), "", `__metadata__: is the string "x", want an object of strings`},
		{"metadata value number", rawFile(`{"__metadata__":{"total":5}}`, nil), "", `__metadata__: key "total" is 5, want a string`},
		{"metadata value object", rawFile(`{"__metadata__":{"k":{}}}`, nil), "", `key "k" is an object`},
		{"metadata key twice", rawFile(`{"__metadata__":{"k":"1","k":"2"}}`, nil), "", `__metadata__: key "k" appears twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeTemp(t, "bad.safetensors", c.file)
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatalf("Open succeeded, want an error containing %q", c.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q\ndoes not contain %q", msg, c.want)
			}
			if !strings.Contains(msg, path) || strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line naming the file", msg)
			}
			var fe *FormatError
			if !errors.Is(err, ErrFormat) || !errors.As(err, &fe) || !badinput.Is(err) {
				t.Fatalf("error %q is not a bad-input FormatError", msg)
			}
			if fe.Path != path || fe.Tensor != c.tensor {
				t.Errorf("FormatError names file %q tensor %q, want %q %q", fe.Path, fe.Tensor, path, c.tensor)
			}
		})
	}
}

// Files the reference implementation accepts but are not what its writer
// produces must still open.
func TestOpenUnusualButValid(t *testing.T) {
	cases := []struct {
		name  string
		file  []byte
		names []string
		meta  map[string]string
	}{
		{"no tensors", rawFile(`{}`, nil), nil, nil},
		{"unpadded header", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{7}), []string{"a"}, nil},
		{"whitespace everywhere", rawFile("{ \"a\" : { \"dtype\" : \"U8\" , \"shape\" : [ 1 ] , \"data_offsets\" : [ 0 , 1 ] } }\n\t ", []byte{7}), []string{"a"}, nil},
		{"empty metadata", rawFile(`{"__metadata__":{}}`, nil), nil, map[string]string{}},
		{"escaped names", rawFile(`{"__metadata__":{"k\n":"\u00e9\"\\"},"a\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{7}), []string{"a\x00b"}, map[string]string{"k\n": "é\"\\"}},
		{"zero-size tensors share an offset", rawFile(`{"b":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"a":{"dtype":"F64","shape":[0],"data_offsets":[0,0]}}`, nil), []string{"a", "b"}, nil},
		{"zero dim beside a huge one", rawFile(`{"a":{"dtype":"F64","shape":[9223372036854775807,0,9223372036854775807],"data_offsets":[0,0]}}`, nil), []string{"a"}, nil},
		{"scalar", rawFile(`{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, make([]byte, 4)), []string{"s"}, nil},
		{"data out of name order", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1, 2}), []string{"a", "b"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Open(writeTemp(t, "ok.safetensors", c.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := f.Names(); strings.Join(got, "|") != strings.Join(c.names, "|") {
				t.Errorf("Names = %q, want %q", got, c.names)
			}
			if got := f.Metadata(); len(got) != len(c.meta) || (got == nil) != (c.meta == nil) {
				t.Errorf("Metadata = %v, want %v", got, c.meta)
			} else {
				for k, v := range c.meta {
					if got[k] != v {
						t.Errorf("Metadata[%q] = %q, want %q", k, got[k], v)
					}
				}
			}
		})
	}
}
