// --device and --dtype flags shared by the verbs that run a model (parsed by the library, so a
// recipe file and a flag accept the same spellings).
#pragma once

#include "lineage/distill/recipe.h"

namespace lineage::cli {

using distill::parse_device;
using distill::parse_dtype;

}  // namespace lineage::cli
