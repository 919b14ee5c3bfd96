// The test binaries' main: libgomp set up as `lineage` sets it (lineage/core/threads.h), so that the
// in-process tests and a spawned `lineage` run their threads alike.
#include <gtest/gtest.h>

#include "lineage/core/threads.h"

int main(int argc, char** argv) {
  lineage::settle_openmp_wait_policy(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
