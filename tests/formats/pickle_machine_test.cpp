// Tests of the pickle virtual machine: every opcode, the evidence it records, the damage it
// reports, and that hostile shapes (depth, lengths, cycles) neither crash nor hide a call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../test_support.h"
#include "aegis/formats/pickle.h"

namespace {

using aegis::formats::analyze_pickle;
using aegis::formats::looks_like_pickle;
using aegis::formats::PickleCall;
using aegis::formats::PickleImport;
using aegis::formats::PickleLimits;
using aegis::formats::PickleReport;
using namespace std::string_view_literals;

// Byte strings below were made with Debian's /usr/bin/python3 (pickle, torch 1.13, numpy 1.24,
// joblib 1.2.0) and pasted here, so that the tests stand alone without Python.
namespace pickle_vectors {

// pickle.dumps(benign structure, protocol=0)
constexpr std::string_view kBenignP0{
      "(dp0\x0aVa\x0ap1\x0a(lp2\x0aI1\x0a" "aF2.5\x0a" "aNaI01\x0a" "aI00\x0a" "aVx\x0ap3\x0a" "a(I1"
      "\x0aI2\x0atp4\x0a" "a(I3\x0atp5\x0a" "a(tasVb\x0ap6\x0a(dp7\x0aVk\x0ap8\x0aI-5\x0asVn\x0ap9\x0aI"
      "-70000\x0assVbig\x0ap10\x0aL1267650600228229401496703205376L\x0asVs\x0ap11\x0aV\xe9\x5cu000a\x5c"
      "u005cq'\x22\x0ap12\x0asVf\x0ap13\x0a" "F1e-05\x0as.",
      198};

// pickle.dumps(benign structure, protocol=1)
constexpr std::string_view kBenignP1{
      "}q\x00(X\x01\x00\x00\x00" "aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00NI01\x0aI00\x0aX\x01"
      "\x00\x00\x00xq\x03(K\x01K\x02tq\x04(K\x03tq\x05)eX\x01\x00\x00\x00" "bq\x06}q\x07(X\x01\x00\x00"
      "\x00kq\x08J\xfb\xff\xff\xffX\x01\x00\x00\x00nq\x09J\x90\xee\xfe\xffuX\x03\x00\x00\x00" "bigq\x0a"
      "L1267650600228229401496703205376L\x0aX\x01\x00\x00\x00sq\x0bX\x07\x00\x00\x00\xc3\xa9\x0a\x5cq'"
      "\x22q\x0cX\x01\x00\x00\x00" "fq\x0dG>\xe4\xf8\xb5\x88\xe3h\xf1u.",
      184};

// pickle.dumps(benign structure, protocol=2)
constexpr std::string_view kBenignP2{
      "\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88\x89X"
      "\x01\x00\x00\x00xq\x03K\x01K\x02\x86q\x04K\x03\x85q\x05)eX\x01\x00\x00\x00" "bq\x06}q\x07(X\x01"
      "\x00\x00\x00kq\x08J\xfb\xff\xff\xffX\x01\x00\x00\x00nq\x09J\x90\xee\xfe\xffuX\x03\x00\x00\x00" ""
      "bigq\x0a\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10X\x01\x00\x00\x00sq\x0bX\x07"
      "\x00\x00\x00\xc3\xa9\x0a\x5cq'\x22q\x0cX\x01\x00\x00\x00" "fq\x0dG>\xe4\xf8\xb5\x88\xe3h\xf1u.",
      159};

// pickle.dumps(benign structure, protocol=3)
constexpr std::string_view kBenignP3{
      "\x80\x03}q\x00(X\x01\x00\x00\x00" "aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88\x89X"
      "\x01\x00\x00\x00xq\x03K\x01K\x02\x86q\x04K\x03\x85q\x05)eX\x01\x00\x00\x00" "bq\x06}q\x07(X\x01"
      "\x00\x00\x00kq\x08J\xfb\xff\xff\xffX\x01\x00\x00\x00nq\x09J\x90\xee\xfe\xffuX\x03\x00\x00\x00" ""
      "bigq\x0a\x8a\x0d\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10X\x01\x00\x00\x00sq\x0bX\x07"
      "\x00\x00\x00\xc3\xa9\x0a\x5cq'\x22q\x0cX\x01\x00\x00\x00" "fq\x0dG>\xe4\xf8\xb5\x88\xe3h\xf1u.",
      159};

// pickle.dumps(benign structure, protocol=4)
constexpr std::string_view kBenignP4{
      "\x80\x04\x95t\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01" "a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00"
      "\x00\x00N\x88\x89\x8c\x01x\x94K\x01K\x02\x86\x94K\x03\x85\x94)e\x8c\x01" "b\x94}\x94(\x8c\x01k"
      "\x94J\xfb\xff\xff\xff\x8c\x01n\x94J\x90\xee\xfe\xffu\x8c\x03" "big\x94\x8a\x0d\x00\x00\x00\x00"
      "\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8c\x01s\x94\x8c\x07\xc3\xa9\x0a\x5cq'\x22\x94\x8c\x01" "f"
      "\x94G>\xe4\xf8\xb5\x88\xe3h\xf1u.",
      127};

// pickle.dumps(benign structure, protocol=5)
constexpr std::string_view kBenignP5{
      "\x80\x05\x95t\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01" "a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00"
      "\x00\x00N\x88\x89\x8c\x01x\x94K\x01K\x02\x86\x94K\x03\x85\x94)e\x8c\x01" "b\x94}\x94(\x8c\x01k"
      "\x94J\xfb\xff\xff\xff\x8c\x01n\x94J\x90\xee\xfe\xffu\x8c\x03" "big\x94\x8a\x0d\x00\x00\x00\x00"
      "\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8c\x01s\x94\x8c\x07\xc3\xa9\x0a\x5cq'\x22\x94\x8c\x01" "f"
      "\x94G>\xe4\xf8\xb5\x88\xe3h\xf1u.",
      127};

// print('\u00e9\n\\q\'"') protocol 0: UNICODE raw-unicode-escape
constexpr std::string_view kShowP0{
      "c__builtin__\x0aprint\x0ap0\x0a(V\xe9\x5cu000a\x5cu005cq'\x22\x0ap1\x0atp2\x0aRp3\x0a.",
      53};

// print([1.5, 2**70, -2**70, b'\x00b']) protocol 2
constexpr std::string_view kShowP2{
      "\x80\x02" "c__builtin__\x0aprint\x0aq\x00]q\x01(G\x3f\xf8\x00\x00\x00\x00\x00\x00\x8a\x09\x00"
      "\x00\x00\x00\x00\x00\x00\x00@\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0" "c_codecs\x0a" "encod"
      "e\x0aq\x02X\x02\x00\x00\x00\x00" "bq\x03X\x06\x00\x00\x00latin1q\x04\x86q\x05Rq\x06" "e\x85q\x07"
      "Rq\x08.",
      112};

// pickle.dumps(os.system('echo pwned') reducer, protocol=2)
constexpr std::string_view kEvilP2{
      "\x80\x02" "cposix\x0asystem\x0aq\x00X\x0a\x00\x00\x00" "echo pwnedq\x01\x85q\x02Rq\x03.",
      42};

// a benign protocol 2 pickle followed by a malicious protocol 4 one
constexpr std::string_view kConcatenated{
      "\x80\x02]q\x00(K\x01K\x02" "e.\x80\x04\x95%\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06"
      "system\x94\x93\x94\x8c\x0a" "echo pwned\x94\x85\x94R\x94.",
      60};

// dict with an os.system pickle as raw bytes, hex str, base64 str of a protocol-0 pickle, base64 bytes, and noise starting with PROTO
constexpr std::string_view kEmbedded{
      "\x80\x04\x95" "F\x01\x00\x00\x00\x00\x00\x00}\x94(\x8c\x03raw\x94" "C*\x80\x02" "cposix\x0asyste"
      "m\x0aq\x00X\x0a\x00\x00\x00" "echo pwnedq\x01\x85q\x02Rq\x03.\x94\x8c\x03hex\x94\x8cT800263706f7"
      "369780a73797374656d0a7100580a0000006563686f2070776e656471018571025271032e\x94\x8c\x03" "b64\x94"
      "\x8c(Y29zCnN5c3RlbQooUydlY2hvIHB3bmVkJwp0Ui4=\x94\x8c\x05" "b64p4\x94" "C@gASVJQAAAAAAAACMBXBvc2"
      "l4lIwGc3lzdGVtlJOUjAplY2hvIHB3bmVklIWUUpQu\x94\x8c\x05plain\x94" "C*\x80\x02\x00\x01\x02\x03\x04"
      "\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c"
      "\x1d\x1e\x1f !\x22#$%&'\x94u.",
      337};

// data.pkl of torch.save({'w': torch.ones(3), 'b': torch.zeros(2)})
constexpr std::string_view kTorchDataPkl{
      "\x80\x02}q\x00(X\x01\x00\x00\x00wq\x01" "ctorch._utils\x0a_rebuild_tensor_v2\x0aq\x02((X\x07\x00"
      "\x00\x00storageq\x03" "ctorch\x0a" "FloatStorage\x0aq\x04X\x01\x00\x00\x00" "0q\x05X\x03\x00\x00"
      "\x00" "cpuq\x06K\x03tq\x07QK\x00K\x03\x85q\x08K\x01\x85q\x09\x89" "ccollections\x0aOrderedDict"
      "\x0aq\x0a)Rq\x0btq\x0cRq\x0dX\x01\x00\x00\x00" "bq\x0eh\x02((h\x03h\x04X\x01\x00\x00\x00" "1q"
      "\x0fh\x06K\x02tq\x10QK\x00K\x02\x85q\x11K\x01\x85q\x12\x89h\x0a)Rq\x13tq\x14Rq\x15u.",
      220};

// joblib.dump of int32 big-endian, Fortran float64 and unicode arrays (inline array bytes)
constexpr std::string_view kJoblibArrays{
      "\x80\x04\x95\xd2\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01i\x94\x8c\x13joblib.numpy_pickle\x94"
      "\x8c\x11NumpyArrayWrapper\x94\x93\x94)\x81\x94}\x94(\x8c\x08subclass\x94\x8c\x05numpy\x94\x8c"
      "\x07ndarray\x94\x93\x94\x8c\x05shape\x94K\x05\x85\x94\x8c\x05order\x94\x8c\x01" "C\x94\x8c\x05"
      "" "dtype\x94h\x08h\x0f\x93\x94\x8c\x02i4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01>\x94NNNJ\xff\xff"
      "\xff\xffJ\xff\xff\xff\xffK\x00t\x94" "b\x8c\x0a" "allow_mmap\x94\x88\x8c\x1bnumpy_array_alignmen"
      "t_bytes\x94K\x10ub\x02\xff\xff\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03"
      "\x00\x00\x00\x04\x95O\x00\x00\x00\x00\x00\x00\x00\x8c\x01" "f\x94h\x04)\x81\x94}\x94(h\x07h\x0ah"
      "\x0bK\x02K\x03\x86\x94h\x0d\x8c\x01" "F\x94h\x0fh\x10\x8c\x02" "f8\x94\x89\x88\x87\x94R\x94(K"
      "\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94" "bh\x16\x88h\x17K\x10ub\x03"
      "\xff\xff\xff\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00"
      "\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00\x00\xf0\x3f\x00\x00\x00\x00\x00"
      "\x00\xf0\x3f\x95" "C\x00\x00\x00\x00\x00\x00\x00\x8c\x01u\x94h\x04)\x81\x94}\x94(h\x07h\x0ah\x0b"
      "K\x02\x85\x94h\x0dh\x0eh\x0fh\x10\x8c\x02U2\x94\x89\x88\x87\x94R\x94(K\x03h NNNK\x08K\x04K\x08t"
      "\x94" "bh\x16\x88h\x17K\x10ub\x03\xff\xff\xff" "a\x00\x00\x00" "b\x00\x00\x00" "c\x00\x00\x00"
      "\x00\x00\x00\x00u.",
      482};

// joblib.dump of an object array (a nested pickle inline) followed by an int array
constexpr std::string_view kJoblibObjectArray{
      "\x80\x04\x95\xd2\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01o\x94\x8c\x13joblib.numpy_pickle\x94"
      "\x8c\x11NumpyArrayWrapper\x94\x93\x94)\x81\x94}\x94(\x8c\x08subclass\x94\x8c\x05numpy\x94\x8c"
      "\x07ndarray\x94\x93\x94\x8c\x05shape\x94K\x03\x85\x94\x8c\x05order\x94\x8c\x01" "C\x94\x8c\x05"
      "" "dtype\x94h\x08h\x0f\x93\x94\x8c\x02O8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01|\x94NNNJ\xff\xff"
      "\xff\xffJ\xff\xff\xff\xffK\x3ft\x94" "b\x8c\x0a" "allow_mmap\x94\x89\x8c\x1bnumpy_array_alignmen"
      "t_bytes\x94K\x10ub\x80\x02" "cnumpy.core.multiarray\x0a_reconstruct\x0aq\x00" "cnumpy\x0andarray"
      "\x0aq\x01K\x00\x85q\x02" "c_codecs\x0a" "encode\x0aq\x03X\x01\x00\x00\x00" "bq\x04X\x06\x00\x00"
      "\x00latin1q\x05\x86q\x06Rq\x07\x87q\x08Rq\x09(K\x01K\x03\x85q\x0a" "cnumpy\x0a" "dtype\x0aq\x0bX"
      "\x02\x00\x00\x00O8q\x0c\x89\x88\x87q\x0dRq\x0e(K\x03X\x01\x00\x00\x00|q\x0fNNNJ\xff\xff\xff\xffJ"
      "\xff\xff\xff\xffK\x3ftq\x10" "b\x89]q\x11(K\x01X\x01\x00\x00\x00xq\x12Netq\x13" "b.\x95O\x00\x00"
      "\x00\x00\x00\x00\x00\x8c\x05" "after\x94h\x04)\x81\x94}\x94(h\x07h\x0ah\x0bK\x02\x85\x94h\x0dh"
      "\x0eh\x0fh\x10\x8c\x02i8\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff"
      "\xff\xff\xffK\x00t\x94" "bh\x16\x88h\x17K\x10ub\x0d\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
      "\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00u.",
      546};

// joblib.dump to an unseekable stream: numpy_array_alignment_bytes=None, no padding byte
constexpr std::string_view kJoblibNoPadding{
      "\x80\x04\x95\xca\x00\x00\x00\x00\x00\x00\x00\x8c\x13joblib.numpy_pickle\x94\x8c\x11NumpyArrayWra"
      "pper\x94\x93\x94)\x81\x94}\x94(\x8c\x08subclass\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94"
      "\x8c\x05shape\x94K\x03\x85\x94\x8c\x05order\x94\x8c\x01" "C\x94\x8c\x05" "dtype\x94h\x06h\x0d"
      "\x93\x94\x8c\x02u2\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff"
      "\xffK\x00t\x94" "b\x8c\x0a" "allow_mmap\x94\x88\x8c\x1bnumpy_array_alignment_bytes\x94Nub\x00"
      "\x00\x01\x00\x02\x00.",
      220};

// joblib.dump(np.arange(3), protocol=2)
constexpr std::string_view kJoblibProtocol2{
      "\x80\x02" "cjoblib.numpy_pickle\x0aNumpyArrayWrapper\x0aq\x00)\x81q\x01}q\x02(X\x08\x00\x00\x00s"
      "ubclassq\x03" "cnumpy\x0andarray\x0aq\x04X\x05\x00\x00\x00shapeq\x05K\x03\x85q\x06X\x05\x00\x00"
      "\x00orderq\x07X\x01\x00\x00\x00" "Cq\x08X\x05\x00\x00\x00" "dtypeq\x09" "cnumpy\x0a" "dtype\x0aq"
      "\x0aX\x02\x00\x00\x00i8q\x0b\x89\x88\x87q\x0cRq\x0d(K\x03X\x01\x00\x00\x00<q\x0eNNNJ\xff\xff\xff"
      "\xffJ\xff\xff\xff\xffK\x00tq\x0f" "bX\x0a\x00\x00\x00" "allow_mmapq\x10\x88X\x1b\x00\x00\x00nump"
      "y_array_alignment_bytesq\x11K\x10ub\x05\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\x01"
      "\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00.",
      281};

// protocol 5 out-of-band buffer (NEXT_BUFFER, READONLY_BUFFER) and a bytearray (BYTEARRAY8)
constexpr std::string_view kProtocol5Buffers{
      "\x80\x05\x95\x14\x00\x00\x00\x00\x00\x00\x00]\x94(\x97\x98\x96\x03\x00\x00\x00\x00\x00\x00\x00xy"
      "z\x94" "e.",
      31};

// every data opcode once or more, checked with pickletools.dis; 93 opcodes
constexpr std::size_t kKitchenSinkOpcodes = 93;

// hand-written: every opcode that is not an import or a call
constexpr std::string_view kKitchenSink{
      "\x80\x05\x95\x11\x01\x00\x00\x00\x00\x00\x00(F1.5\x0aI42\x0aL12345678901234567890123L\x0aM4\x12J"
      "\xff\xff\xff\xffK\x07N\x88\x89S'a\x5cx41\x5cn\x5c'b'\x0aT\x03\x00\x00\x00" "abcU\x02hiV\x5cu20ac"
      "\x0aX\x02\x00\x00\x00ok\x8c\x01s\x8d\x03\x00\x00\x00\x00\x00\x00\x00u8!B\x02\x00\x00\x00" "b4C"
      "\x01" "c\x8e\x02\x00\x00\x00\x00\x00\x00\x00" "b8\x96\x02\x00\x00\x00\x00\x00\x00\x00" "ba\x8a"
      "\x02\xff\x7f\x8b\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00G@\x02\x00\x00\x00\x00\x00"
      "\x00Ppid\x0aNQp10\x0a" "0g10\x0ar\x00\x01\x00\x00j\x00\x01\x00\x00q\x05h\x05\x94" "2(K\x01K\x02"
      "" "1(K\x01K\x02l(K\x01K\x02" "d(K\x01t\x8f(K\x01\x90(K\x02\x91)]}K\x01\x85K\x01K\x02\x86K\x01K"
      "\x02K\x03\x87\x97\x98]K\x01" "a](K\x01K\x02" "e}K\x01K\x02s}(K\x01K\x02ut.",
      284};

}  // namespace pickle_vectors

namespace v = pickle_vectors;

std::span<const std::uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
PickleReport analyze(std::string_view s, const PickleLimits& limits = {}) { return analyze_pickle(as_bytes(s), limits); }

bool has_import(const PickleReport& r, std::string_view module, std::string_view name) {
  return std::any_of(r.imports.begin(), r.imports.end(),
                     [&](const PickleImport& i) { return i.module == module && i.name == name && i.resolved; });
}
const PickleCall* find_call(const PickleReport& r, std::string_view kind, std::string_view callee) {
  for (const auto& c : r.calls) {
    if (c.kind == kind && c.callee == callee) return &c;
  }
  return nullptr;
}
std::string malformed(const PickleReport& r) { return r.malformed.value_or(""); }

// ---------------------------------------------------------------------------------------------
// Benign data

TEST(PickleMachine, BenignStructureInEveryProtocolHasNoImportsOrCalls) {
  const std::string_view all[] = {v::kBenignP0, v::kBenignP1, v::kBenignP2, v::kBenignP3, v::kBenignP4, v::kBenignP5};
  for (int p = 0; p < 6; ++p) {
    SCOPED_TRACE("protocol " + std::to_string(p));
    const PickleReport r = analyze(all[p]);
    EXPECT_FALSE(r.malformed) << malformed(r);
    EXPECT_TRUE(r.imports.empty());
    EXPECT_TRUE(r.calls.empty());
    EXPECT_EQ(r.pickles, 1u);
    EXPECT_EQ(r.bytes_consumed, all[p].size());
    EXPECT_EQ(r.trailing_bytes, 0u);
    EXPECT_EQ(r.highest_protocol, p >= 2 ? p : -1);
    EXPECT_TRUE(looks_like_pickle(as_bytes(all[p])));
  }
}

TEST(PickleMachine, KitchenSinkDecodesEveryDataOpcode) {
  const PickleReport r = analyze(v::kKitchenSink);
  EXPECT_FALSE(r.malformed) << malformed(r) << " at " << r.malformed_offset;
  EXPECT_EQ(r.opcodes, v::kKitchenSinkOpcodes);
  EXPECT_EQ(r.pickles, 1u);
  EXPECT_EQ(r.highest_protocol, 5);
  EXPECT_TRUE(r.imports.empty());
  EXPECT_TRUE(r.calls.empty());  // writes into plain containers are data, not calls
}

TEST(PickleMachine, Protocol5BuffersAndByteArrays) {
  const PickleReport r = analyze(v::kProtocol5Buffers);
  EXPECT_FALSE(r.malformed) << malformed(r);
  EXPECT_EQ(r.pickles, 1u);
  EXPECT_TRUE(r.imports.empty());
}

TEST(PickleMachine, ProtocolZeroTextIsDecodedAsThePythonLoaderDoes) {
  // print('\u00e9\n\\q\'"') pickled with protocol 0: UNICODE with raw-unicode-escape
  PickleReport r = analyze(v::kShowP0);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "('\u00e9\\n\\\\q\\'\"',)");

  // STRING with Python escapes, as a hand-written protocol 0 call
  r = analyze("cbuiltins\nprint\n(S'a\\x41\\n\\'b\\\\'\ntR."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "('aA\\n\\'b\\\\',)");

  // floats, big ints and bytes as arguments
  r = analyze(v::kShowP2);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 2u);  // _codecs.encode for the bytes (protocol 2), then print
  EXPECT_EQ(r.calls[1].callee, "__builtin__.print");
  EXPECT_NE(r.calls[1].arguments.find("1.5"), std::string::npos) << r.calls[1].arguments;
  EXPECT_NE(r.calls[1].arguments.find("<int of 9 bytes>"), std::string::npos) << r.calls[1].arguments;
}

TEST(PickleMachine, ProtocolZeroNumbersAcceptWhatTheLoaderAccepts) {
  const PickleReport r = analyze("cbuiltins\nprint\n(I0x1f\nI-7\nI01\nL99999999999999999999999L\nF-2.5e3\nF1e-4\ntR."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "(31, -7, True, 99999999999999999999999, -2500.0, 0.0001)");
}

TEST(PickleMachine, BadProtocolZeroArgumentsAreMalformed) {
  EXPECT_NE(malformed(analyze("Iabc\n."sv)).find("invalid literal for int"), std::string::npos);
  EXPECT_NE(malformed(analyze("F1.2.3\n."sv)).find("float"), std::string::npos);
  EXPECT_NE(malformed(analyze("Sabc\n."sv)).find("must be quoted"), std::string::npos);
  EXPECT_NE(malformed(analyze("S'\\x4'\n."sv)).find("\\x escape"), std::string::npos);
  EXPECT_NE(malformed(analyze("V\\u12\n."sv)).find("\\uXXXX"), std::string::npos);
  EXPECT_NE(malformed(analyze("N\x80\x09."sv)).find("unsupported pickle protocol"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Imports and calls

TEST(PickleMachine, GlobalAndReduceRecordTheCall) {
  const PickleReport r = analyze("cos\nsystem\n(S'echo pwned'\ntR."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.imports.size(), 1u);
  EXPECT_EQ(r.imports[0].module, "os");
  EXPECT_EQ(r.imports[0].name, "system");
  EXPECT_EQ(r.imports[0].opcode, "GLOBAL");
  EXPECT_EQ(r.imports[0].offset, 0u);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].kind, "call");
  EXPECT_EQ(r.calls[0].opcode, "REDUCE");
  EXPECT_EQ(r.calls[0].callee, "os.system");
  EXPECT_EQ(r.calls[0].module, "os");
  EXPECT_EQ(r.calls[0].name, "system");
  EXPECT_EQ(r.calls[0].arguments, "('echo pwned',)");
  EXPECT_EQ(r.calls[0].offset, 27u);
}

TEST(PickleMachine, PickledReducerFromPython) {
  const PickleReport r = analyze(v::kEvilP2);
  ASSERT_FALSE(r.malformed) << malformed(r);
  EXPECT_TRUE(has_import(r, "posix", "system"));
  const PickleCall* call = find_call(r, "call", "posix.system");
  ASSERT_NE(call, nullptr);
  EXPECT_EQ(call->arguments, "('echo pwned',)");
}

TEST(PickleMachine, StackGlobalTakesItsNamesFromTheMemo) {
  // 'os' and 'system' are BINPUT once and fetched again with BINGET for a second import
  const auto data =
      "\x80\x04\x8c\x02osq\x00\x8c\x06systemq\x01\x93\x8c\x02id\x85R0h\x00h\x01\x93\x8c\x05uname\x85R."sv;
  const PickleReport r = analyze(data);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.imports.size(), 2u);
  for (const auto& imp : r.imports) {
    EXPECT_EQ(imp.opcode, "STACK_GLOBAL");
    EXPECT_EQ(imp.module, "os");
    EXPECT_EQ(imp.name, "system");
    EXPECT_TRUE(imp.resolved);
  }
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[1].callee, "os.system");
  EXPECT_EQ(r.calls[1].arguments, "('uname',)");
}

TEST(PickleMachine, StackGlobalWithNonStringOperandsIsUnresolved) {
  const PickleReport r = analyze("\x80\x04K\x01\x8c\x06system\x93)R."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.imports.size(), 1u);
  EXPECT_FALSE(r.imports[0].resolved);
  EXPECT_EQ(r.imports[0].opcode, "STACK_GLOBAL");
  EXPECT_NE(r.imports[0].detail.find("int"), std::string::npos) << r.imports[0].detail;
  ASSERT_EQ(r.calls.size(), 1u);  // the call on it is still recorded
  EXPECT_TRUE(r.calls[0].module.empty());
}

TEST(PickleMachine, InstAndObjAreCalls) {
  PickleReport r = analyze("(S'echo pwned'\nios\nsystem\n."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.imports.size(), 1u);
  EXPECT_EQ(r.imports[0].opcode, "INST");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].opcode, "INST");
  EXPECT_EQ(r.calls[0].callee, "os.system");
  EXPECT_EQ(r.calls[0].arguments, "('echo pwned',)");

  r = analyze("(cos\nsystem\nS'echo hi'\no."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].opcode, "OBJ");
  EXPECT_EQ(r.calls[0].callee, "os.system");
  EXPECT_EQ(r.calls[0].arguments, "('echo hi',)");

  EXPECT_NE(malformed(analyze("ios\nsystem\n."sv)).find("MARK"), std::string::npos);
  EXPECT_NE(malformed(analyze("(o."sv)).find("underflow"), std::string::npos);
}

TEST(PickleMachine, NewObjAndNewObjEx) {
  PickleReport r = analyze("\x80\x04\x8c\x0asubprocess\x8c\x05Popen\x93\x8c\x02ls\x85\x81."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].opcode, "NEWOBJ");
  EXPECT_EQ(r.calls[0].callee, "subprocess.Popen");
  EXPECT_EQ(r.calls[0].arguments, "('ls',)");

  r = analyze("\x80\x04\x8c\x0asubprocess\x8c\x05Popen\x93\x8c\x02ls\x85}\x8c\x05shell\x88s\x92."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].opcode, "NEWOBJ_EX");
  EXPECT_EQ(r.calls[0].arguments, "('ls',), {'shell': True}");
}

TEST(PickleMachine, CallOnACallResultNamesTheRootImport) {
  // getattr(__import__('builtins'), 'eval')('print(1)')
  const PickleReport r =
      analyze("cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'builtins'\ntRS'eval'\ntR(S'print(1)'\ntR."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.imports.size(), 2u);
  ASSERT_EQ(r.calls.size(), 3u);
  EXPECT_EQ(r.calls[0].callee, "builtins.__import__");
  EXPECT_EQ(r.calls[1].callee, "builtins.getattr");
  EXPECT_EQ(r.calls[1].arguments, "(builtins.__import__('builtins'), 'eval')");
  const PickleCall& outer = r.calls[2];
  EXPECT_EQ(outer.callee, "builtins.getattr(builtins.__import__('builtins'), 'eval')");
  EXPECT_EQ(outer.module, "builtins");
  EXPECT_EQ(outer.name, "getattr");
  EXPECT_EQ(outer.arguments, "('print(1)',)");
}

TEST(PickleMachine, ExtensionCodesAreUnresolved) {
  const PickleReport r = analyze("\x80\x02\x82\x01\x83\x00\x01\x84\x00\x00\x01\x00\x87."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.imports.size(), 3u);
  const char* opcodes[] = {"EXT1", "EXT2", "EXT4"};
  const char* codes[] = {"code 1:", "code 256:", "code 65536:"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(r.imports[i].resolved);
    EXPECT_EQ(r.imports[i].opcode, opcodes[i]);
    EXPECT_NE(r.imports[i].detail.find(codes[i]), std::string::npos) << r.imports[i].detail;
  }
  EXPECT_NE(malformed(analyze("\x80\x02\x82\x00."sv)).find("code <= 0"), std::string::npos);
}

TEST(PickleMachine, BuildAndItemWritesOnImportedObjectsAreRecorded) {
  // foo.Bar.__new__ then BUILD {'x': 1}
  PickleReport r = analyze("\x80\x02" "cfoo\nBar\n)\x81}S'x'\nK\x01sb."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[1].kind, "build");
  EXPECT_EQ(r.calls[1].opcode, "BUILD");
  EXPECT_EQ(r.calls[1].callee, "foo.Bar()");
  EXPECT_EQ(r.calls[1].module, "foo");
  EXPECT_EQ(r.calls[1].name, "Bar");
  EXPECT_EQ(r.calls[1].arguments, "{'x': 1}");

  // item and append writes into an object returned by a call
  r = analyze("cbuiltins\nglobals\n)RS'x'\nK\x01s(S'k'\nK\x02u0cfoo\nBar\n)RK\x05" "a(K\x06" "e."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  std::vector<std::string> kinds;
  for (const auto& c : r.calls) kinds.push_back(c.kind + "/" + c.opcode);
  EXPECT_EQ(kinds, (std::vector<std::string>{"call/REDUCE", "setitem/SETITEM", "setitem/SETITEMS", "call/REDUCE",
                                             "append/APPEND", "append/APPENDS"}));
  EXPECT_EQ(r.calls[1].callee, "builtins.globals()");
  EXPECT_EQ(r.calls[1].arguments, "['x'] = 1");
  EXPECT_EQ(r.calls[2].arguments, "{'k': 2}");

  // the same writes into plain containers are data
  r = analyze("}S'x'\nK\x01s(S'k'\nK\x02u0]K\x05" "a(K\x06" "e0\x8f(K\x01\x90" "0}}b."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  EXPECT_TRUE(r.calls.empty());
}

TEST(PickleMachine, PersistentIdsGiveTorchStorageKeys) {
  const PickleReport r = analyze(v::kTorchDataPkl);
  ASSERT_FALSE(r.malformed) << malformed(r);
  EXPECT_EQ(r.storage_keys, (std::vector<std::string>{"0", "1"}));
  EXPECT_TRUE(has_import(r, "torch._utils", "_rebuild_tensor_v2"));
  EXPECT_TRUE(has_import(r, "torch", "FloatStorage"));
  const PickleCall* call = find_call(r, "call", "torch._utils._rebuild_tensor_v2");
  ASSERT_NE(call, nullptr);
  EXPECT_NE(call->arguments.find("(3,)"), std::string::npos) << call->arguments;
}

TEST(PickleMachine, RecordLimitCountsWhatItDrops) {
  PickleLimits limits;
  limits.max_records = 2;
  const PickleReport r = analyze("cos\nsystem\n(S'a'\ntR0cos\nsystem\n(S'b'\ntR."sv, limits);
  ASSERT_FALSE(r.malformed) << malformed(r);
  EXPECT_EQ(r.imports.size() + r.calls.size(), 2u);
  EXPECT_EQ(r.records_dropped, 2u);
}

// ---------------------------------------------------------------------------------------------
// Streams: concatenation, damage, truncation

TEST(PickleMachine, ConcatenatedPicklesAreAllScanned) {
  const PickleReport r = analyze(v::kConcatenated);
  ASSERT_FALSE(r.malformed) << malformed(r);
  EXPECT_EQ(r.pickles, 2u);
  EXPECT_EQ(r.bytes_consumed, v::kConcatenated.size());
  EXPECT_EQ(r.highest_protocol, 4);
  EXPECT_NE(find_call(r, "call", "posix.system"), nullptr);

  PickleLimits one;
  one.max_pickles = 1;
  const PickleReport first = analyze(v::kConcatenated, one);
  EXPECT_EQ(first.pickles, 1u);
  EXPECT_LT(first.bytes_consumed, v::kConcatenated.size());
  EXPECT_TRUE(first.calls.empty());
}

TEST(PickleMachine, EachConcatenatedPickleStartsWithAnEmptyMemo) {
  const PickleReport r = analyze("\x80\x02K\x01q\x00.\x80\x02h\x00."sv);
  EXPECT_EQ(r.pickles, 1u);
  EXPECT_NE(malformed(r).find("memo value not found at index 0"), std::string::npos) << malformed(r);
  EXPECT_EQ(r.malformed_offset, 9u);
}

TEST(PickleMachine, TrailingBytesThatAreNotAPickle) {
  const PickleReport r = analyze("N.\x00\x01\x02garbage"sv);
  EXPECT_FALSE(r.malformed) << malformed(r);
  EXPECT_EQ(r.pickles, 1u);
  EXPECT_EQ(r.bytes_consumed, 2u);
  EXPECT_EQ(r.trailing_bytes, 10u);
}

TEST(PickleMachine, CallBeforeDamageIsStillReported) {
  // nullifAI: the payload runs, then the stream breaks so that loaders and scanners give up
  const auto data = "\x80\x02\x63os\nsystem\n(S'echo pwned'\ntR\xff\xff\xff"sv;
  const PickleReport r = analyze(data);
  ASSERT_TRUE(r.malformed);
  EXPECT_NE(r.malformed->find("unknown opcode 0xff"), std::string::npos) << *r.malformed;
  EXPECT_EQ(r.malformed_offset, 30u);
  EXPECT_EQ(r.pickles, 0u);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].callee, "os.system");
}

TEST(PickleMachine, TruncationIsReported) {
  std::string data(v::kEvilP2);
  data.pop_back();  // no STOP
  PickleReport r = analyze(data);
  EXPECT_NE(malformed(r).find("no STOP"), std::string::npos) << malformed(r);
  EXPECT_EQ(r.malformed_offset, data.size());
  EXPECT_EQ(r.calls.size(), 1u);

  r = analyze("\x80\x04\x8c\x10" "abc"sv);
  EXPECT_NE(malformed(r).find("truncated SHORT_BINUNICODE"), std::string::npos) << malformed(r);
  EXPECT_EQ(r.malformed_offset, 2u);
  r = analyze("\x80\x04J\x01\x02"sv);
  EXPECT_NE(malformed(r).find("truncated BININT"), std::string::npos) << malformed(r);
  r = analyze("cos\nsys"sv);
  EXPECT_NE(malformed(r).find("end of line"), std::string::npos) << malformed(r);
  r = analyze(""sv);
  EXPECT_TRUE(r.malformed);
}

TEST(PickleMachine, HugeDeclaredLengthsAreTruncationNotAllocation) {
  for (const auto opcode : {"\x8e"sv, "\x8d"sv, "\x96"sv}) {
    std::string data = "\x80\x05";
    data += opcode;
    data += "\xff\xff\xff\xff\xff\xff\xff\x7f" "abc";
    const PickleReport r = analyze(data);
    EXPECT_NE(malformed(r).find("declares 9223372036854775807 bytes, 3 left"), std::string::npos) << malformed(r);
  }
  EXPECT_NE(malformed(analyze("\x80\x02X\xff\xff\xff\xff" "ab"sv)).find("truncated BINUNICODE"), std::string::npos);
  EXPECT_NE(malformed(analyze("\x80\x02T\xff\xff\xff\xff" "ab"sv)).find("negative"), std::string::npos);
  EXPECT_NE(malformed(analyze("\x80\x02\x8b\xff\xff\xff\xff" "ab"sv)).find("negative"), std::string::npos);
  EXPECT_NE(malformed(analyze("\x80\x02\x8b\xff\xff\xff\x7f" "ab"sv)).find("truncated LONG4"), std::string::npos);
}

TEST(PickleMachine, StackAndMemoErrors) {
  EXPECT_NE(malformed(analyze("R."sv)).find("REDUCE: stack underflow"), std::string::npos);
  EXPECT_NE(malformed(analyze("N(R."sv)).find("below a MARK"), std::string::npos);
  EXPECT_NE(malformed(analyze("."sv)).find("STOP: stack underflow"), std::string::npos);
  EXPECT_NE(malformed(analyze("h\x05."sv)).find("memo value not found at index 5"), std::string::npos);
  EXPECT_NE(malformed(analyze("g7\n."sv)).find("memo value not found at index 7"), std::string::npos);
  EXPECT_NE(malformed(analyze("Np-1\n."sv)).find("negative PUT"), std::string::npos);
  EXPECT_NE(malformed(analyze("t."sv)).find("could not find MARK"), std::string::npos);
  EXPECT_NE(malformed(analyze("(K\x01" "d."sv)).find("odd number of items for DICT"), std::string::npos);
  EXPECT_NE(malformed(analyze("}(K\x01u."sv)).find("odd number of items for SETITEMS"), std::string::npos);
  EXPECT_NE(malformed(analyze("(K\x01" "e."sv)).find("nothing below the MARK"), std::string::npos);
  PickleLimits limits;
  limits.max_memo_entries = 10;
  EXPECT_NE(malformed(analyze("Nr\x00\x01\x00\x00."sv, limits)).find("beyond the limit"), std::string::npos);
}

TEST(PickleMachine, PopAndPopMarkFollowTheCLoader) {
  // POP on a MARK that is on top drops the MARK
  PickleReport r = analyze("N(0."sv);
  EXPECT_FALSE(r.malformed) << malformed(r);
  r = analyze("N(NN1."sv);
  EXPECT_FALSE(r.malformed) << malformed(r);
  r = analyze("N2000."sv);  // DUP, then one POP too many
  EXPECT_NE(malformed(r).find("POP: stack underflow"), std::string::npos) << malformed(r);
}

TEST(PickleMachine, MemoizedNoneAndSparseMemoIndices) {
  const PickleReport r = analyze("cbuiltins\nprint\nN\x94r\x00\x00\x10\x00" "0h\x00j\x00\x00\x10\x00\x86R."sv);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "(None, None)");
}

// ---------------------------------------------------------------------------------------------
// Hostile shapes

TEST(PickleMachine, DeepNestingDoesNotRecurse) {
  const std::size_t depth = 1000000;
  std::string lists(depth, ']');
  lists += std::string(depth - 1, 'a');
  lists += '.';
  PickleReport r = analyze(lists);
  EXPECT_FALSE(r.malformed) << malformed(r);
  EXPECT_EQ(r.opcodes, 2 * depth);

  std::string marks(depth, '(');
  marks += "N.";
  r = analyze(marks);
  EXPECT_FALSE(r.malformed) << malformed(r);

  std::string tuples(depth / 2, '(');
  tuples += std::string(depth / 2, 't');
  tuples += '.';
  r = analyze(tuples);
  EXPECT_FALSE(r.malformed) << malformed(r);

  // a call whose argument nests a million levels deep still has a short repr
  std::string call = "cos\nsystem\n";
  call += std::string(depth, ']');
  call += std::string(depth - 1, 'a');
  call += "\x85R.";
  r = analyze(call);
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_LE(r.calls[0].arguments.size(), 210u);

  PickleLimits limits;
  limits.max_stack_depth = 1000;
  EXPECT_NE(malformed(analyze(std::string(2000, ']') + ".", limits)).find("stack depth limit"), std::string::npos);
}

TEST(PickleMachine, SelfReferencesThroughTheMemoAreHarmless) {
  // a list appended to itself, a dict holding itself, an object whose state is itself
  const PickleReport r = analyze("]q\x00h\x00" "a}q\x01h\x01h\x01sK\x01h\x01s0cfoo\nBar\n)Rq\x02h\x02" "b."sv);
  EXPECT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[1].kind, "build");
}

TEST(PickleMachine, ReprsAreValidUtf8AndBounded) {
  // invalid UTF-8 and control bytes in names and arguments come back escaped
  const PickleReport r = analyze("\x80\x04\x8c\x03o\xffs\x8c\x02\x01x\x93\x8c\xc8" +
                                 std::string(200, 'A') + std::string("\x85R."));
  ASSERT_FALSE(r.malformed) << malformed(r);
  ASSERT_EQ(r.imports.size(), 1u);
  EXPECT_EQ(r.imports[0].module, "o\\xffs");
  EXPECT_EQ(r.imports[0].name, "\\x01x");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_LE(r.calls[0].arguments.size(), 210u);
  EXPECT_NE(r.calls[0].arguments.find("..."), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Pickles inside the data

TEST(PickleMachine, EmbeddedPicklesRawHexAndBase64) {
  const PickleReport r = analyze(v::kEmbedded);
  ASSERT_FALSE(r.malformed) << malformed(r);
  EXPECT_TRUE(r.calls.empty());
  std::multiset<std::string> encodings;
  for (const auto& e : r.embedded) {
    encodings.insert(e.encoding);
    ASSERT_NE(e.report, nullptr);
    EXPECT_FALSE(e.report->malformed) << *e.report->malformed;
    const bool system = find_call(*e.report, "call", "posix.system") || find_call(*e.report, "call", "os.system");
    EXPECT_TRUE(system) << e.encoding;
  }
  // the PROTO-prefixed noise is not reported: it decodes to nothing
  EXPECT_EQ(encodings, (std::multiset<std::string>{"base64", "base64", "hex", "raw"}));
}

TEST(PickleMachine, EmbeddedNestingIsBounded) {
  // a pickle whose only value is itself pickled, ten times over
  std::string data = "cos\nsystem\n(S'id'\ntR.";
  for (int i = 0; i < 10; ++i) {
    std::string outer = "\x80\x04\x8e";
    std::uint64_t n = data.size();
    for (int b = 0; b < 8; ++b) outer += static_cast<char>((n >> (8 * b)) & 0xFF);
    outer += data;
    outer += '.';
    data = outer;
  }
  PickleLimits limits;
  limits.max_nested_depth = 3;
  const PickleReport* r = nullptr;
  const PickleReport top = analyze(data, limits);
  r = &top;
  int levels = 0;
  while (!r->embedded.empty()) {
    r = r->embedded[0].report.get();
    ++levels;
  }
  EXPECT_EQ(levels, 3);
}

// ---------------------------------------------------------------------------------------------
// joblib

TEST(PickleMachine, JoblibInlineArraysAreSkipped) {
  for (const auto data : {v::kJoblibArrays, v::kJoblibNoPadding, v::kJoblibProtocol2}) {
    const PickleReport r = analyze(data);
    EXPECT_FALSE(r.malformed) << malformed(r) << " at " << r.malformed_offset;
    EXPECT_EQ(r.pickles, 1u);
    EXPECT_EQ(r.bytes_consumed, data.size());
    EXPECT_EQ(r.trailing_bytes, 0u);
    for (const auto& imp : r.imports) {
      EXPECT_TRUE(imp.module == "numpy" || imp.module == "joblib.numpy_pickle") << imp.module << "." << imp.name;
    }
  }
}

TEST(PickleMachine, JoblibObjectArrayIsANestedPickleInline) {
  const PickleReport r = analyze(v::kJoblibObjectArray);
  ASSERT_FALSE(r.malformed) << malformed(r) << " at " << r.malformed_offset;
  EXPECT_EQ(r.pickles, 1u);
  EXPECT_EQ(r.bytes_consumed, v::kJoblibObjectArray.size());
  EXPECT_TRUE(has_import(r, "numpy.core.multiarray", "_reconstruct"));  // from the inline pickle
}

TEST(PickleMachine, JoblibArrayCutShortIsMalformed) {
  // the first array is int32 big-endian 0..4: drop its last element, and what follows the
  // skip no longer decodes
  std::string data(v::kJoblibArrays);
  const std::size_t last = data.find("\x00\x00\x00\x03\x00\x00\x00\x04"sv);
  ASSERT_NE(last, std::string::npos);
  data.erase(last + 4, 4);
  PickleReport r = analyze(data);
  ASSERT_TRUE(r.malformed);
  EXPECT_GT(r.malformed_offset, last);
  EXPECT_GT(r.imports.size(), 0u);

  // cut inside the array bytes: the declared size runs past the end
  r = analyze(std::string_view(v::kJoblibArrays).substr(0, last + 2));
  EXPECT_NE(malformed(r).find("joblib array data declares 20 bytes"), std::string::npos) << malformed(r);
}

TEST(PickleMachine, JoblibWrapperWithoutUsableStateIsMalformed) {
  const PickleReport r = analyze("\x80\x02\x63joblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}b."sv);
  EXPECT_NE(malformed(r).find("no dtype"), std::string::npos) << malformed(r);
  // the old NDArrayWrapper keeps its data in separate files: nothing inline
  const PickleReport old = analyze("\x80\x02\x63joblib.numpy_pickle\nNDArrayWrapper\n)\x81}b."sv);
  EXPECT_FALSE(old.malformed) << malformed(old);
}

// ---------------------------------------------------------------------------------------------
// Sniffing

TEST(PickleMachine, LooksLikePickle) {
  EXPECT_TRUE(looks_like_pickle(as_bytes("\x80\x02}q\x00."sv)));
  EXPECT_TRUE(looks_like_pickle(as_bytes("\x80\x05\x95\x10\x00\x00\x00\x00\x00\x00\x00"sv)));
  EXPECT_TRUE(looks_like_pickle(as_bytes("cos\nsystem\n(S'id'\ntR."sv)));
  EXPECT_TRUE(looks_like_pickle(as_bytes("cos\nsystem\n"sv)));  // a prefix is enough
  EXPECT_TRUE(looks_like_pickle(as_bytes("(lp0\nI1\na."sv)));
  EXPECT_TRUE(looks_like_pickle(as_bytes("(dp0\nS'a'\np1\nI1\ns."sv)));
  EXPECT_TRUE(looks_like_pickle(as_bytes("}q\x00(X\x01\x00\x00\x00"sv)));
  EXPECT_TRUE(looks_like_pickle(as_bytes("N."sv)));

  EXPECT_FALSE(looks_like_pickle(as_bytes(""sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("N"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("\x80\x07N."sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("\x80\x02\xff"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("hello world"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("(a) see below"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("config.json"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("class Foo:\n    pass\n"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("Some text that starts with S"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("\x89PNG\r\n\x1a\n"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes("PK\x03\x04"sv)));
  EXPECT_FALSE(looks_like_pickle(as_bytes(std::string(64, '\0'))));
}

// ---------------------------------------------------------------------------------------------
// Fixtures made by tests/fixtures/make_fixtures.py with the real libraries

// Fixtures are made by tests/fixtures/make_fixtures.py before the tests run; a missing one is a failure.
std::vector<std::uint8_t> fixture_bytes(const std::string& name) { return aegis::test::read_file(aegis::test::fixture(name)); }

TEST(PickleMachineFixtures, JoblibFilesReadCleanly) {
  for (const char* name : {"benign/joblib_sklearn_logreg.joblib", "benign/joblib_numpy_arrays.joblib"}) {
    const auto data = fixture_bytes(name);
    ASSERT_FALSE(data.empty());
    const PickleReport r = analyze_pickle(data);
    EXPECT_FALSE(r.malformed) << name << ": " << r.malformed.value_or("") << " at " << r.malformed_offset;
    EXPECT_EQ(r.bytes_consumed, data.size()) << name;
    EXPECT_EQ(r.trailing_bytes, 0u) << name;
    EXPECT_FALSE(r.imports.empty()) << name;
    for (const auto& imp : r.imports) {
      const bool expected = imp.module.starts_with("numpy") || imp.module.starts_with("joblib") ||
                            imp.module.starts_with("sklearn");
      EXPECT_TRUE(expected) << name << ": " << imp.module << "." << imp.name;
    }
  }
}

TEST(PickleMachineFixtures, PlainStructuresReadCleanly) {
  for (int p : {0, 2, 4, 5}) {
    const std::string name = "benign/plain_structures_p" + std::to_string(p) + ".pkl";
    const auto data = fixture_bytes(name);
    ASSERT_FALSE(data.empty());
    const PickleReport r = analyze_pickle(data);
    EXPECT_FALSE(r.malformed) << name << ": " << r.malformed.value_or("");
    EXPECT_EQ(r.pickles, 1u);
    for (const auto& imp : r.imports) {  // sets, bytes, complex need builtins before protocol 3/5
      const bool builtin = imp.module == "builtins" || imp.module == "__builtin__" || imp.module == "_codecs";
      EXPECT_TRUE(builtin) << name << ": " << imp.module << "." << imp.name;
    }
  }
}

TEST(PickleMachineFixtures, StateDictIsAZipNotAPickle) {
  // torch.save writes a zip; its data.pkl is read through the zip reader. The raw file must
  // not pass for a pickle, or a scanner would look at the wrong bytes.
  const auto data = fixture_bytes("benign/state_dict.pt");
    ASSERT_FALSE(data.empty());
  EXPECT_FALSE(looks_like_pickle(data));
}

}  // namespace
