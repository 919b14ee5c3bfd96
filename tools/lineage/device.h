// --device and --dtype flags shared by the verbs that run a model (parsed by the library, so a
// recipe file and a flag accept the same spellings).
#pragma once

#include "lineage/core/device.h"

namespace lineage::cli {

using lineage::parse_device;
using lineage::parse_dtype;

}  // namespace lineage::cli
