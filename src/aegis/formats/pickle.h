// Static analysis of Python pickle streams: a pickle virtual machine that decodes every opcode,
// simulates the stack and memo with values, and records what a loader would import and call.
// It never executes anything and never allocates in proportion to the payload bytes it skips.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace aegis::formats {

struct PickleLimits {
  std::size_t max_memo_entries = 1u << 24;     // memo indices beyond this are refused as malformed
  std::size_t max_stack_depth = 1u << 20;      // values on the stack plus marks
  std::size_t max_container_items_kept = 16;   // items kept per container for evidence; counts stay exact
  std::size_t max_string_kept = 256;           // bytes of a string kept for evidence (names are kept whole up to 4096)
  std::size_t max_nested_depth = 4;            // pickles inside pickle data, analysed recursively
  std::size_t max_records = 100000;            // imports + calls recorded before we stop recording (counted still)
  std::size_t max_pickles = 0;                 // stop after this many concatenated pickles (0: run to the end)
  // Read as joblib.load does: skip the array bytes joblib writes inline after a NumpyArrayWrapper.
  // false reads as plain pickle.load does, which runs those bytes as opcodes.
  bool skip_joblib_arrays = true;
};

// A global that the loader resolves through find_class (GLOBAL, INST, STACK_GLOBAL) or an
// extension code (EXT1/2/4), which cannot be resolved statically.
struct PickleImport {
  std::string module;   // empty when unresolved
  std::string name;     // empty when unresolved
  bool resolved = true; // false: STACK_GLOBAL with operands that are not strings, or an EXT code
  std::string opcode;   // "GLOBAL", "STACK_GLOBAL", "INST", "EXT1", ...
  std::uint64_t offset = 0;
  std::string detail;   // how it was resolved or why it could not be
};

// Something the loader would do with a value: call it (REDUCE, OBJ, INST, NEWOBJ, NEWOBJ_EX),
// set its state (BUILD) or store into it (SETITEM/SETITEMS/APPEND on a non-builtin object).
struct PickleCall {
  std::string kind;      // "call", "build", "setitem", "append"
  std::string opcode;    // the opcode that triggered it
  std::string callee;    // dotted name of what is called / modified, e.g. "os.system", or a description
                         // like "getattr(builtins, 'eval')(...)" for a call on a call's result
  std::string module;    // module and name of the root import behind the callee, when there is one
  std::string name;
  std::string arguments; // short repr of the arguments or state, truncated for evidence
  std::uint64_t offset = 0;
};

struct PickleReport;

// A pickle found inside the data: a bytes or str value that holds a pickle raw, as hex or as base64.
struct EmbeddedPickle {
  std::uint64_t offset = 0;   // offset of the opcode that pushed the value
  std::string encoding;       // "raw", "hex", "base64"
  std::shared_ptr<PickleReport> report;
};

struct PickleReport {
  std::vector<PickleImport> imports;
  std::vector<PickleCall> calls;
  std::vector<EmbeddedPickle> embedded;
  // Keys of persistent ids shaped as PyTorch storages: ('storage', type, key, location, numel).
  std::vector<std::string> storage_keys;
  std::size_t records_dropped = 0;   // imports/calls not recorded because of max_records

  int highest_protocol = -1;         // from PROTO; -1 when there was none (protocol 0/1)
  std::size_t pickles = 0;           // complete pickles (STOP reached)
  std::uint64_t bytes_consumed = 0;  // offset just after the last STOP, or where analysis stopped
  std::uint64_t opcodes = 0;
  std::size_t joblib_arrays_skipped = 0;  // inline joblib arrays skipped (see skip_joblib_arrays)

  // Set when the stream is damaged or truncated; everything before the damage is still recorded.
  std::optional<std::string> malformed;
  std::uint64_t malformed_offset = 0;
  // Bytes after the last complete pickle that do not start another one.
  std::uint64_t trailing_bytes = 0;
};

// Analyse the pickle stream in `data`. Never throws on malformed input: damage goes into the report.
PickleReport analyze_pickle(std::span<const std::uint8_t> data, const PickleLimits& limits = {});

// Cheap check used to decide whether some bytes are worth analysing as a pickle:
// a PROTO opcode with a known protocol followed by a valid opcode, or a protocol 0/1 start.
bool looks_like_pickle(std::span<const std::uint8_t> data);

}  // namespace aegis::formats
