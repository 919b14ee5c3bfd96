// Precompiled header: libtorch costs ~20 s per translation unit without it.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>
#include <string>
#include <vector>
#include <map>
