// OpenSSL objects owned by std::unique_ptr (internal to federated/): one alias instead of a deleter
// struct per file.
#pragma once

#include <memory>

namespace aegis::federated {

template <class T, void (*Free)(T*)>
struct OpenSslFree {
  void operator()(T* p) const { Free(p); }
};

template <class T, void (*Free)(T*)>
using OpenSslPtr = std::unique_ptr<T, OpenSslFree<T, Free>>;

}  // namespace aegis::federated
