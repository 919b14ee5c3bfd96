// core/file: atomic writes leave either the old file or the new one, never a part; readers fail
// with the path and the field.
#include "lineage/core/file.h"

#include "lineage/core/error.h"
#include "test_util.h"

namespace lineage {
namespace {

using testing::TempDir;

TEST(AtomicWriter, CommitReplacesTheFileWhole) {
  TempDir tmp;
  auto path = tmp / "f.bin";
  write_file_atomic(path, "old");
  AtomicWriter w(path);
  w.write("new contents");
  EXPECT_EQ(testing::slurp(path), "old");  // not visible before commit
  w.commit();
  EXPECT_EQ(testing::slurp(path), "new contents");
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator{}), 1);
}

TEST(AtomicWriter, AbandonedWriteLeavesTheOldFileAndNoTemp) {
  TempDir tmp;
  auto path = tmp / "f.bin";
  write_file_atomic(path, "old");
  {
    AtomicWriter w(path);
    w.write("half of a new");
  }  // destroyed without commit, as when an exception unwinds
  EXPECT_EQ(testing::slurp(path), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator{}), 1);
}

TEST(AtomicWriter, PadsToAlignment) {
  TempDir tmp;
  AtomicWriter w(tmp / "p");
  w.write("abc");
  w.pad_to(32);
  EXPECT_EQ(w.offset(), 32u);
  w.pad_to(32);
  EXPECT_EQ(w.offset(), 32u);
  w.commit();
  EXPECT_EQ(fs::file_size(tmp / "p"), 32u);
}

TEST(ByteReader, TruncationNamesTheFieldAndOffset) {
  uint8_t data[6] = {1, 0, 0, 0, 2, 0};
  ByteReader r(data, sizeof(data), "model.bin");
  EXPECT_EQ(r.read<int32_t>("dim"), 1);
  try {
    r.read<int32_t>("hidden_dim");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("model.bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("hidden_dim"), std::string::npos) << msg;
    EXPECT_NE(msg.find("offset 4"), std::string::npos) << msg;
  }
}

TEST(MappedFile, MissingFileNamesThePath) {
  try {
    MappedFile f("/nonexistent/lineage/x.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/lineage/x.gguf"), std::string::npos);
  }
}

TEST(MappedFile, MapsContents) {
  TempDir tmp;
  testing::spit(tmp / "a", "hello");
  MappedFile f(tmp / "a");
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.data()), 5), "hello");
}

}  // namespace
}  // namespace lineage
