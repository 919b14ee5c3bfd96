// The one place that turns what a user names as a teacher — a model file, an OpenAI-compatible URL,
// and optionally a teacher cache made from it — into a Teacher.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "lineage/teacher/http_teacher.h"
#include "lineage/teacher/teacher.h"

namespace lineage::teacher {

struct TeacherSpec {
  std::string source;  // a model path (any format io::read_model reads) or an http(s) URL
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat32;
  // For a URL: how to reach it; `http.tokenizer` (the student's, which its answers are mapped
  // onto) is required.
  HttpTeacherOptions http;
  std::string cache;  // a teacher cache (`lineage cache`) of this teacher: top-k by row comes from it
};

// LocalTeacher for a path, HttpTeacher for a URL, either wrapped in a CachedTeacher when
// spec.cache is set. Fails naming the source when it cannot be opened.
std::unique_ptr<Teacher> open(const TeacherSpec& spec);

}  // namespace lineage::teacher
