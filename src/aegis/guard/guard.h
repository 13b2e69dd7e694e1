// guard/: request and response guards for LLM endpoints, shared by `aegis guard`, the gateway's
// llm_guard filter and `aegis redteam`'s detectors.
#pragma once

#include "aegis/guard/decode.h"
#include "aegis/guard/input_guard.h"
#include "aegis/guard/output_guard.h"
#include "aegis/guard/text_normalize.h"
