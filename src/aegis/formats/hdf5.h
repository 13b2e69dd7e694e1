// HDF5 (Keras .h5) metadata extraction. libhdf5 is a large C library with a long record of crashes
// on crafted files, so it never reads a file in the scanner's process: files go to forked worker
// processes (reused from file to file, replaced after any failure) that run under a system-call
// filter (no opening files, no sockets, no exec: only the image they were handed and their socket),
// a CPU-time, memory and wall-clock limit, with plugin loading switched off and no dataset ever read. A worker
// sends back the string attributes and the links it saw; one that dies is reported, not propagated.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace aegis::formats {

struct Hdf5Limits {
  std::size_t max_objects = 20000;             // groups and datasets visited
  std::size_t max_attributes = 100000;         // attributes looked at, in all
  std::uint64_t max_attribute_bytes = 64 << 20;  // one string attribute, and all of them together
  unsigned cpu_seconds = 60;                   // the child's CPU-time limit
  unsigned wall_seconds = 120;                 // killed after this long, whatever it is doing
  std::uint64_t memory_bytes = 2ull << 30;     // heap the child may add (not under AddressSanitizer)
};

struct Hdf5Attribute {
  std::string object;  // "/" for the root group, "/model_weights/dense" ...
  std::string name;
  std::string value;   // string attributes; arrays of strings joined with '\n'
  bool truncated = false;
};

struct Hdf5Link {
  std::string object;  // where the link is
  std::string name;
  std::string kind;    // "external" or "soft"
  std::string target;  // "file:path" for external links, the path for soft links
};

struct Hdf5Extract {
  bool opened = false;       // libhdf5 accepted the file
  bool child_died = false;   // the child was killed by a signal (crash, limit) or timed out
  std::string error;         // why nothing (or not everything) was read
  std::size_t objects = 0;
  bool limit_hit = false;    // a Hdf5Limits bound stopped the walk early
  bool confined = false;     // the worker ran under its system-call filter (seccomp), not limits alone
  std::vector<Hdf5Attribute> attributes;
  std::vector<Hdf5Link> links;
};

// The HDF5 signature at byte 0, 512, 1024, 2048, ... (a user block may precede the superblock).
bool looks_like_hdf5(std::span<const std::uint8_t> data);

// Initialises libhdf5 once in this process (no file is touched), so that each reader child starts
// with a ready library instead of setting it up anew. Call it while the process has one thread
// (the scanner does so in its constructor): a fork must never copy a lock another thread holds.
// Optional; without it every child initialises the library itself.
void prepare_hdf5();

// Reads every string attribute of every group and dataset, and the external and soft links, in a
// sandboxed child process. Never throws for a bad file; the result says what went wrong.
// `path`, when given, names the file `data` maps: the reader then opens it itself instead of
// receiving a copy of the bytes.
Hdf5Extract extract_hdf5(std::span<const std::uint8_t> data, const Hdf5Limits& limits = {},
                         const std::string& path = {});

}  // namespace aegis::formats
