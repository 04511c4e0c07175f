// snug batch [MODEL] --in requests.jsonl --out results.jsonl: offline jobs
// through the same scheduler `snug serve` uses.
//
// Input: one request per line in OpenAI's batch shape,
//   {"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
// (url /v1/completions or /v1/chat/completions; method POST or absent).
// Output: one line per custom_id, in completion order,
//   {"id": "batch_req_...", "custom_id": "...", "response": {"status_code": 200,
//    "request_id": "...", "body": <the completion object>}, "error": null}
// A request the server would refuse gets its status and OpenAI error body; a
// line that is not a request at all gets "response": null and an "error".
//
// Resumable: ids already in the output are skipped. Each result is appended
// with one write() of a whole line; a line torn by a kill (no newline at the
// end of the file) is cut off before the rerun appends, so every id ends up
// exactly once.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/bytes.h"
#include "base/log.h"
#include "cli/batch_flags.h"
#include "cli/budget.h"
#include "cli/common.h"
#include "engine/scheduler.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "text/chat_prompt.h"

namespace snug::cli {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// The ids already answered in `path`, after cutting a torn last line.
Result<std::unordered_set<std::string>> read_done(const std::string& path, int* torn) {
  std::unordered_set<std::string> done;
  *torn = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) return done;  // no output yet
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t keep = all.rfind('\n');
  keep = keep == std::string::npos ? 0 : keep + 1;
  if (keep < all.size()) {
    *torn = 1;
    if (::truncate(path.c_str(), static_cast<off_t>(keep)) != 0)
      return make_error("cannot cut the torn last line of '", path, "'");
  }
  size_t start = 0;
  int line_no = 0;
  while (start < keep) {
    const size_t end = all.find('\n', start);
    ++line_no;
    const std::string_view line(all.data() + start, end - start);
    start = end + 1;
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("custom_id"))
      return make_error("'", path, "' line ", line_no,
                        " is not a result line of snug batch; refusing to append to it");
    if (j["custom_id"].is_string()) done.insert(j["custom_id"].get<std::string>());
  }
  return done;
}

std::string random_hex(std::mt19937_64& rng, int n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(digits[rng() % 16]);
  return s;
}

class Output {
 public:
  static Result<Output> open(const std::string& path) {
    Output o;
    o.fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (o.fd_ < 0) return make_error("cannot open '", path, "' for writing");
    return o;
  }
  Output(Output&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  ~Output() {
    if (fd_ >= 0) ::close(fd_);
  }
  // One write() for the whole line, so a kill leaves it whole or torn at the
  // end of the file, never interleaved.
  Status append(const json& j) {
    std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace);
    line.push_back('\n');
    size_t off = 0;
    while (off < line.size()) {
      const ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
      if (n < 0) return make_error("cannot write the results file");
      off += static_cast<size_t>(n);
    }
    return ok_status();
  }

 private:
  Output() = default;
  int fd_ = -1;
};

// One request line in flight.
struct Job {
  std::string custom_id;
  std::shared_ptr<engine::RequestStream> stream;
  server::ResponseMeta meta;
  server::Completion completion;
};

struct Counts {
  int64_t lines = 0;     // request lines read
  int64_t skipped = 0;   // already in the output
  int64_t dupes = 0;     // a custom_id seen earlier in this input
  int64_t answered = 0;  // results written this run (success or error)
  int64_t failed = 0;    // of those, errors
  int64_t tokens = 0;    // generated this run
};

json error_line(std::mt19937_64& rng, const json& custom_id, const std::string& code,
                const std::string& message) {
  return {{"id", "batch_req_" + random_hex(rng, 24)},
          {"custom_id", custom_id},
          {"response", nullptr},
          {"error", {{"code", code}, {"message", message}}}};
}

json refused_line(std::mt19937_64& rng, const std::string& custom_id, const server::ApiError& e) {
  return {{"id", "batch_req_" + random_hex(rng, 24)},
          {"custom_id", custom_id},
          {"response",
           {{"status_code", e.status},
            {"request_id", random_hex(rng, 24)},
            {"body", json::parse(server::error_body(e))}}},
          {"error", nullptr}};
}

// "12:34" or "1:02:03".
std::string clock_text(double seconds) {
  const auto s = static_cast<int64_t>(seconds < 0 ? 0 : seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

class Progress {
 public:
  Progress(int64_t total, bool enabled)
      : total_(total), enabled_(enabled), tty_(::isatty(STDERR_FILENO) != 0) {}
  void update(const Counts& c, bool last) {
    if (!enabled_) return;
    const auto now = Clock::now();
    const double since = std::chrono::duration<double>(now - shown_).count();
    if (!last && since < (tty_ ? 0.25 : 5.0)) return;
    shown_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const int64_t done = c.answered;
    const int64_t todo = total_ - c.skipped - c.dupes;
    const double rate = elapsed > 0 ? static_cast<double>(c.tokens) / elapsed : 0;
    const double eta = done > 0 ? elapsed * static_cast<double>(todo - done) / done : 0;
    constexpr int kWidth = 28;
    const int fill = todo > 0 ? static_cast<int>(kWidth * done / todo) : kWidth;
    std::string bar(static_cast<size_t>(fill), '=');
    bar.resize(kWidth, ' ');
    std::fprintf(stderr, "%s[%s] %lld/%lld  %.1f tok/s  elapsed %s  ETA %s%s", tty_ ? "\r" : "",
                 bar.c_str(), static_cast<long long>(done), static_cast<long long>(todo), rate,
                 clock_text(elapsed).c_str(), done > 0 ? clock_text(eta).c_str() : "--:--",
                 tty_ && !last ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  int64_t total_;
  bool enabled_, tty_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point shown_ = Clock::time_point{};
};

// Counts the request lines (for the progress bar's total).
int64_t count_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int64_t n = 0;
  std::string line;
  while (std::getline(in, line)) n += line.find_first_not_of(" \t\r") != std::string::npos;
  return n;
}

}  // namespace

int batch_main(const BatchFlags& f) {
  if (f.verbose) set_log_level(LogLevel::kInfo);
  std::ifstream in(f.in, std::ios::binary);
  if (!in) return fail(make_error("cannot read '", printable(f.in, 200), "'"));
  if (f.out.empty()) return fail(make_error("--out is required"));
  int torn = 0;
  auto done = read_done(f.out, &torn);
  if (!done.ok()) return fail(done.error());
  if (torn) log_warn("'{}' ended in a torn line (an interrupted run); it was cut off", f.out);
  auto out = Output::open(f.out);
  if (!out.ok()) return fail(out.error());

  memory::Ledger ledger;
  auto pm = load_planned(f.engine.plan_flags(), &ledger);
  if (!pm.ok()) return fail(pm.error());
  const plan::SessionShape& shape = pm->fit.plan.session.shape;
  const LoadedModel& lm = pm->lm;
  auto scheduler = engine::Scheduler::create(
      *lm.model, *lm.tokenizer, f.engine.scheduler_options(shape), &ledger, pm->budget.get());
  if (!scheduler.ok()) return fail(scheduler.error());
  auto prompts = text::ChatPrompter::create(*lm.tokenizer, lm.model->config().arch_name);
  if (!prompts.ok()) return fail(make_error("chat template: ", prompts.error().message));
  log_info("batch: context {}, KV pool {}, {} sequences at once; kernels {}", (*scheduler)->n_ctx(),
           format_bytes((*scheduler)->plan().kv_bytes), (*scheduler)->max_seqs(),
           describe_kernels(*lm.model));
  if (const std::string hint = pack_hint(*lm.model); !hint.empty()) log_info("{}", hint);

  server::ServedModel served;
  served.name = f.engine.served_name(f.alias);
  served.n_ctx = (*scheduler)->n_ctx();
  served.prompts = &prompts.value();
  const server::ServerLimits limits;
  std::mt19937_64 rng(std::random_device{}());
  Counts c;
  Progress progress(count_lines(f.in), !f.quiet);
  std::unordered_set<std::string> seen;
  std::deque<Job> jobs;
  std::optional<std::pair<std::string, server::OpenAIRequest>> held;  // refused: queue full
  const size_t max_jobs = static_cast<size_t>((*scheduler)->max_seqs()) * 2;
  bool eof = false;
  int64_t line_no = 0;

  auto write = [&](const json& j, bool failed) -> Status {
    SNUG_RETURN_IF_ERROR((*out).append(j));
    ++c.answered;
    c.failed += failed;
    return ok_status();
  };
  // Parses the next request line; a line that is not one is answered at once.
  auto next_request = [&]() -> std::optional<std::pair<std::string, server::OpenAIRequest>> {
    std::string line;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      ++c.lines;
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      const json id = j.is_object() && j.contains("custom_id") ? j["custom_id"] : json(nullptr);
      auto bad = [&](const std::string& msg) {
        if (Status st = write(error_line(rng, id, "invalid_request", msg), true); !st.ok())
          log_warn("{}", st.error().message);
      };
      if (j.is_discarded() || !j.is_object()) {
        bad("line " + std::to_string(line_no) + " is not a JSON object");
        continue;
      }
      if (!id.is_string() || id.get<std::string>().empty()) {
        bad("line " + std::to_string(line_no) + ": custom_id must be a non-empty string");
        continue;
      }
      const std::string cid = id.get<std::string>();
      if (done->count(cid)) {
        ++c.skipped;
        continue;
      }
      if (!seen.insert(cid).second) {
        ++c.dupes;
        log_warn("line {}: custom_id '{}' was already used in this file; skipped", line_no,
                 printable(cid, 80));
        continue;
      }
      const std::string url = j.value("url", std::string());
      server::Endpoint ep;
      if (url == "/v1/chat/completions") {
        ep = server::Endpoint::kChatCompletions;
      } else if (url == "/v1/completions") {
        ep = server::Endpoint::kCompletions;
      } else {
        bad("line " + std::to_string(line_no) +
            ": url must be /v1/chat/completions or /v1/completions");
        continue;
      }
      if (j.contains("method") && j["method"] != "POST") {
        bad("line " + std::to_string(line_no) + ": method must be POST");
        continue;
      }
      if (!j.contains("body") || !j["body"].is_object()) {
        bad("line " + std::to_string(line_no) + ": body must be a JSON object");
        continue;
      }
      json body = j["body"];
      if (body.contains("stream") && body["stream"] == true) body["stream"] = false;
      auto req = server::parse_request(ep, body.dump(), served, limits);
      if (!req.ok()) {
        if (Status st = write(refused_line(rng, cid, req.error()), true); !st.ok())
          log_warn("{}", st.error().message);
        continue;
      }
      return std::make_pair(cid, std::move(req.value()));
    }
    eof = true;
    return std::nullopt;
  };

  while (!eof || held || !jobs.empty()) {
    bool busy = false;
    // Keep the scheduler fed: twice its running sequences in flight.
    while (jobs.size() < max_jobs && (held || !eof)) {
      auto r = held ? std::exchange(held, std::nullopt) : next_request();
      if (!r) break;
      server::OpenAIRequest& req = r->second;
      engine::Submission sub = (*scheduler)->submit(req.params);
      if (sub.rejection == engine::Rejection::kQueueFull) {
        held = std::move(r);
        break;
      }
      busy = true;
      if (!sub.stream) {
        server::ApiError e;
        e.status = 400;
        e.message = sub.message;
        Status st = write(refused_line(rng, r->first, e), true);
        if (!st.ok()) return fail(st.error());
        continue;
      }
      Job job;
      job.custom_id = r->first;
      job.stream = sub.stream;
      job.meta = server::make_meta(req.endpoint, served.name, req.logprobs, false);
      jobs.push_back(std::move(job));
    }
    for (auto it = jobs.begin(); it != jobs.end();) {
      engine::RequestStream::Event e;
      bool finished = false;
      while (it->stream->next(&e, std::chrono::milliseconds(0))) {
        busy = true;
        if (e.token) {
          ++c.tokens;
          it->completion.text += e.token->text;
          if (it->meta.logprobs) it->completion.tokens.push_back(std::move(*e.token));
          continue;
        }
        it->completion.text += e.finish->text;
        it->completion.finish = std::move(*e.finish);
        finished = true;
        break;
      }
      if (!finished) {
        ++it;
        continue;
      }
      json line = {{"id", "batch_req_" + random_hex(rng, 24)},
                   {"custom_id", it->custom_id},
                   {"response",
                    {{"status_code", 200},
                     {"request_id", it->meta.id},
                     {"body", json::parse(server::completion_body(it->meta, it->completion,
                                                                  *lm.tokenizer))}}},
                   {"error", nullptr}};
      if (Status st = write(line, false); !st.ok()) return fail(st.error());
      it = jobs.erase(it);
    }
    progress.update(c, false);
    if (!busy) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  progress.update(c, true);
  std::fprintf(stderr,
               "snug batch: %lld results written (%lld errors), %lld already done, %lld duplicate "
               "ids skipped; %lld tokens generated\n",
               static_cast<long long>(c.answered), static_cast<long long>(c.failed),
               static_cast<long long>(c.skipped), static_cast<long long>(c.dupes),
               static_cast<long long>(c.tokens));
  return 0;
}

}  // namespace snug::cli
