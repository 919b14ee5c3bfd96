// API keys: hashed with BLAKE2b, compared in constant time. See include/lineage/serve/keys.h.
#include "lineage/core/json.h"
#include "lineage/serve/keys.h"

#include <sodium.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lineage/core/error.h"
#include "lineage/core/file.h"

namespace lineage::serve {

namespace {

void init_sodium() {
  if (sodium_init() < 0) fail("libsodium could not be initialised");
}

std::vector<unsigned char> hash_bytes(std::string_view secret) {
  std::vector<unsigned char> h(crypto_generichash_BYTES);
  crypto_generichash(h.data(), h.size(), reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), nullptr, 0);
  return h;
}

std::string to_hex(const std::vector<unsigned char>& b) {
  std::string s(b.size() * 2 + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), b.data(), b.size());
  s.pop_back();
  return s;
}

}  // namespace

std::string hash_key(std::string_view secret) {
  init_sodium();
  return to_hex(hash_bytes(secret));
}

KeyStore KeyStore::load(const std::string& path) {
  init_sodium();
  nlohmann::json j;
  try {
    std::string text = read_file(path);
    check_json_depth(text, "API key file '" + path + "'");
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("API key file '{}' is not valid JSON: {}", path, e.what());
  }
  if (!j.is_object() || !j.contains("keys") || !j["keys"].is_array())
    fail("API key file '{}' must be an object with a \"keys\" array", path);
  KeyStore ks;
  for (size_t i = 0; i < j["keys"].size(); ++i) {
    const auto& k = j["keys"][i];
    if (!k.is_object() || !k.contains("id") || !k["id"].is_string() || !k.contains("hash") || !k["hash"].is_string())
      fail("API key file '{}': entry {} needs string fields \"id\" and \"hash\"", path, i);
    ApiKey key{k["id"].get<std::string>(), k["hash"].get<std::string>()};
    // Numbers through the integer check: nlohmann's get<int64_t>() of 1e19 wraps negative, of 2.5 truncates.
    auto number = [&](const char* field) -> int64_t {
      if (!k.contains(field) || k[field].is_null()) return 0;
      return need_json_int(k[field], fmt::format("API key file '{}': key '{}': {}", path, key.id, field), 0);
    };
    key.quota_tokens = number("quota_tokens");
    key.rpm = number("rpm");
    key.tpm = number("tpm");
    std::vector<unsigned char> bin(crypto_generichash_BYTES);
    size_t len = 0;
    if (key.hash_hex.size() != 2 * bin.size() ||
        sodium_hex2bin(bin.data(), bin.size(), key.hash_hex.data(), key.hash_hex.size(), nullptr, &len, nullptr) != 0 ||
        len != bin.size())
      fail("API key file '{}': key '{}' has a malformed hash (expected {} hex digits)", path, key.id, 2 * bin.size());
    ks.keys_.push_back(std::move(key));
    ks.hashes_.push_back(std::move(bin));
  }
  return ks;
}

std::string KeyStore::add_key(const std::string& path, const std::string& id, int64_t quota_tokens, int64_t rpm,
                              int64_t tpm) {
  init_sodium();
  if (id.empty()) fail("an API key needs an id");
  if (quota_tokens < 0) fail("--quota must be >= 0 (0: unlimited), got {}", quota_tokens);
  if (rpm < 0) fail("--rpm must be >= 0 (0: no limit), got {}", rpm);
  if (tpm < 0) fail("--tpm must be >= 0 (0: no limit), got {}", tpm);
  nlohmann::json j = {{"keys", nlohmann::json::array()}};
  if (std::filesystem::exists(path)) {
    KeyStore::load(path);  // refuses a malformed file before it is rewritten
    j = nlohmann::json::parse(read_file(path));
  }
  for (const auto& k : j["keys"])
    if (k["id"] == id) fail("API key file '{}' already has a key '{}'", path, id);
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  std::string b64(sodium_base64_ENCODED_LEN(sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(b64.data(), b64.size(), raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  b64.resize(std::strlen(b64.c_str()));
  std::string secret = "lin-" + b64;
  nlohmann::json entry = {{"id", id}, {"hash", hash_key(secret)}, {"quota_tokens", quota_tokens}};
  if (rpm > 0) entry["rpm"] = rpm;
  if (tpm > 0) entry["tpm"] = tpm;
  j["keys"].push_back(entry);
  write_file_atomic(path, j.dump(2) + "\n");
  return secret;
}

std::optional<ApiKey> KeyStore::find(std::string_view secret) const {
  auto h = hash_bytes(secret);
  std::optional<ApiKey> found;
  for (size_t i = 0; i < keys_.size(); ++i)  // no early exit: every stored hash is compared
    if (sodium_memcmp(h.data(), hashes_[i].data(), h.size()) == 0) found = keys_[i];
  return found;
}

}  // namespace lineage::serve
