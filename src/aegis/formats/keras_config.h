// Static review of a Keras model configuration (JSON): where loading the model would run stored
// Python bytecode (Lambda layers), import modules outside Keras (custom objects), or call
// TensorFlow functions that reach the file system or Python (TFOpLambda). Nothing is loaded,
// imported or evaluated; marshalled code is only described (see pymarshal.h).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/formats/issue.h"

namespace aegis::formats {

struct KerasReview {
  std::string keras_version;  // from a top-level "keras_version" (keras_metadata.pb, metadata.json), if any
  std::string backend;        // from a top-level "backend", if any
  std::vector<FormatIssue> issues;        // at most kMaxIssuesPerFile, most severe first
  std::size_t layers = 0;                 // layer configs visited (models count as layers of their parent)
  std::vector<std::string> layer_classes;  // distinct layer class names, in the order first seen
};

// Reviews one JSON document. It can be:
//  - the `model_config` attribute of a Keras 2 / Keras 3 legacy .h5 file ({"class_name", "config"});
//  - `config.json` of a Keras 3 `.keras` archive ("module", "class_name", "config", "registered_name");
//  - one per-object metadata string of a SavedModel's `keras_metadata.pb` (a layer or a model,
//    possibly with "model_config" inside);
//  - the `training_config` attribute of an .h5 file, or `metadata.json` of a `.keras` archive
//    (only keras_version is taken from the latter).
// `origin` names where the text came from ("model_config attribute", "config.json",
// "keras_metadata.pb") and is used in titles. Never throws.
//
// Rules (FormatIssue::rule):
//   keras.lambda-layer          critical  Lambda (or any "__lambda__" object) holding marshalled bytecode;
//                               high      Lambda naming a module function (function_type "function"/"raw")
//   keras.module-outside-keras  critical  object whose module is os, subprocess, builtins.eval, ...;
//                               high      any other module or registered package outside Keras;
//                               medium    a TensorFlow or NumPy module outside their Keras APIs
//   keras.tfoplambda            critical  TFOpLambda/ClassMethod calling a TF function that writes files,
//                                         runs Python (py_function, numpy_function) or loads libraries;
//                               high      one that reads or lists files or prints to a file stream
//   keras.config-unreadable     medium    not JSON, nested deeper than 128, or too large
//   keras.config-limit          medium    more layers or nodes than the review visits
KerasReview review_keras_config(std::string_view json_text, std::string_view origin);

}  // namespace aegis::formats
