// The dangerous-op table for the TensorFlow analyser: data/scan/tf_ops.txt, compiled into the
// library by cmake/embed_data.cmake so that the binary stands alone.
#include <string_view>

#include "aegis/formats/tf_graph.h"

namespace aegis::data {
extern const std::string_view tf_ops;
}

namespace aegis::formats {

std::string_view tf_op_table() { return data::tf_ops; }

}  // namespace aegis::formats
