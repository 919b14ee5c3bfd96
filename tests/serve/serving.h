// `lineage serve` in-process on a free loopback port, serving the embedded teacher (or the model
// the options name) from a thread for the life of the object (shared by the serve module's tests).
#pragma once

#include <httplib.h>

#include <memory>
#include <string>
#include <thread>

#include "lineage/serve/server.h"

namespace lineage::testing {

inline const std::string kServedModel = std::string(LINEAGE_SOURCE_DIR) + "/models/lineage-kjv-5m.gguf";
inline const std::string kServedId = "lineage-kjv-5m";

struct Serving {
  std::unique_ptr<serve::Server> server;
  std::thread thread;
  int port = 0;
  explicit Serving(serve::ServeOptions o) {
    if (o.model.empty()) o.model = kServedModel;
    o.port = 0;
    o.quiet = true;
    server = std::make_unique<serve::Server>(o);
    port = server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~Serving() {
    server->stop();
    thread.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port) + "/v1"; }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120, 0);
    if (!key.empty()) c.set_bearer_token_auth(key);
    return c;
  }
};

}  // namespace lineage::testing
