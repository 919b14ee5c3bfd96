// `lineage serve`: an OpenAI-compatible HTTP server for one model (cpp-httplib).
//
//   GET  /health                 {"status": "ok", ...}
//   GET  /v1/models              the one model, with its tokenizer digest and context length
//   POST /v1/completions         prompt: string | [string] | [int] | [[int]]; echo + logprobs score the prompt
//   POST /v1/chat/completions    messages through the model's chat template
//
// Parameters as OpenAI documents them: max_tokens (max_completion_tokens), temperature, top_p,
// seed, stop (string or up to 4), n, logprobs / top_logprobs (at most 20), echo, stream (+
// stream_options.include_usage), user; unknown fields are ignored as OpenAI ignores them.
// Extension, as vLLM names it: return_tokens_as_token_ids gives tokens as "token_id:N".
// Errors are OpenAI's JSON {"error": {"message", "type", "param", "code"}} with status 400
// (malformed JSON or parameters), 401 (missing or unknown key), 404 (unknown model or route),
// 405, 413 (body over --max-body), 429 (quota spent), 503 (queue full, with Retry-After).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "lineage/protect/deterrence.h"

namespace lineage::serve {

struct ServeOptions {
  std::string model;           // model file or folder
  std::string tokenizer;       // tokenizer file; "": the one the model carries or has beside it
  std::string model_id;        // "" : the file or folder name without extension
  std::string host = "127.0.0.1";
  int port = 8080;             // 0: any free port
  std::string api_keys;        // key file (keys.h); "": no authentication
  std::string log;             // SQLite request log; "": none
  bool log_text = true;        // store prompt text in the log
  std::string device = "cpu";
  std::string dtype = "f32";
  int max_batch = 16;          // sequences decoded together
  int max_queue = 256;         // waiting requests before 503
  int threads = 64;            // HTTP worker threads: requests processed at once (idle connections hold none)
  int64_t max_body_bytes = 8 << 20;  // a request body, as received and after gzip/deflate are undone
  // Total time a request may take to arrive: its headers within min(10, this) s, its body within
  // this many s — deadlines that do not restart with each byte, so a slow sender cannot hold on.
  int read_timeout_s = 30;
  int max_connections = 4096;             // open at once, in all
  int max_connections_per_client = 1024;  // open at once from one address
  std::string watermark_key;   // key file (protect/watermark.h); "": no watermark
  double watermark_gamma = 0.25, watermark_delta = 2.0;
  int watermark_context = 1;
  protect::DeterrenceOptions deterrence;  // antidistillation sampling and fingerprints; off by default
  std::string draft;           // speculative decoding's draft model ("": none)
  int draft_tokens = 4;        // tokens it proposes per check
  int draft_max_batch = 1;     // speculate while at most this many sequences run; batch above
  double drain_seconds = 30;   // on SIGTERM: time running requests get to finish before they are cancelled
  bool public_metrics = false; // answer GET /metrics to any client (default: loopback only)
  bool quiet = false;
};

class Server {
 public:
  explicit Server(const ServeOptions& options);  // loads the model, opens keys and log
  ~Server();
  // Binds the listening socket; returns the port (the chosen one when options.port is 0).
  int bind();
  // Serves until stop(); then lets running requests finish.
  void run();
  void stop();
  // Fails every queued and running request (503, "the server is shutting down"): the end of a
  // drain that ran out of time.
  void cancel_running();
  const std::string& model_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The CLI: binds, prints "listening on http://HOST:PORT", serves until SIGTERM or SIGINT, then
// stops accepting, lets running requests finish for up to drain_seconds (cancelling what is left
// then), closes the log and returns.
void run_serve(const ServeOptions& options);

}  // namespace lineage::serve
