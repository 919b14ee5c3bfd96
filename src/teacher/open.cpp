// teacher::open (see open.h).
#include "lineage/teacher/open.h"

#include "lineage/core/error.h"
#include "lineage/teacher/cache.h"

namespace lineage::teacher {

std::unique_ptr<Teacher> open(const TeacherSpec& spec) {
  if (spec.source.empty()) fail("no teacher given (a model path or an http(s):// URL)");
  std::unique_ptr<Teacher> t;
  if (is_url(spec.source))
    t = std::make_unique<HttpTeacher>(spec.source, spec.http);  // fails naming --tokenizer when it has none
  else
    t = std::make_unique<LocalTeacher>(spec.source, spec.device, spec.dtype);
  if (spec.cache.empty()) return t;
  return std::make_unique<CachedTeacher>(std::move(t), spec.cache);
}

}  // namespace lineage::teacher
