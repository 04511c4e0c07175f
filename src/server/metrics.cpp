#include "server/metrics.h"

#include <fmt/format.h>

namespace snug::server {
namespace {

// Shortest text that reads back as the same double; +Inf as Prometheus spells it.
std::string number(double v) {
  return fmt::format("{}", v);
}

void header(std::string* out, const char* name, const char* type, const char* help) {
  fmt::format_to(std::back_inserter(*out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template <typename V>
void sample(std::string* out, const char* name, V value, std::string_view labels = {}) {
  if (labels.empty()) {
    fmt::format_to(std::back_inserter(*out), "{} {}\n", name, value);
  } else {
    fmt::format_to(std::back_inserter(*out), "{}{{{}}} {}\n", name, labels, value);
  }
}

template <typename V>
void single(std::string* out, const char* name, const char* type, const char* help, V value) {
  header(out, name, type, help);
  sample(out, name, value);
}

void histogram(std::string* out, const char* name, const char* help,
               const engine::LatencyHistogram& h) {
  header(out, name, "histogram", help);
  uint64_t cumulative = 0;
  const std::string bucket = std::string(name) + "_bucket";
  for (int i = 0; i < engine::LatencyHistogram::kBuckets; ++i) {
    cumulative += h.counts[i];
    sample(out, bucket.c_str(), cumulative,
           "le=\"" + number(engine::LatencyHistogram::kBounds[i]) + "\"");
  }
  cumulative += h.counts[engine::LatencyHistogram::kBuckets];
  sample(out, bucket.c_str(), cumulative, "le=\"+Inf\"");
  sample(out, (std::string(name) + "_sum").c_str(), number(h.sum));
  sample(out, (std::string(name) + "_count").c_str(), h.count);
}

const char* category_label(memory::Category c) {
  switch (c) {
    case memory::Category::kWeightsMapped:
      return "weights_mapped";
    case memory::Category::kWeightsResident:
      return "weights_resident";
    case memory::Category::kKvCache:
      return "kv_cache";
    case memory::Category::kScratch:
      return "scratch";
    case memory::Category::kTokenizer:
      return "tokenizer";
    default:
      return "other";
  }
}

void scheduler_metrics(std::string* out, const engine::SchedulerMetrics& m) {
  single(out, "snug_requests_submitted_total", "counter", "Requests given to the scheduler.",
         m.requests_submitted);
  single(out, "snug_requests_rejected_total", "counter",
         "Requests the scheduler refused (full queue, never fits, shutting down).",
         m.requests_rejected);
  header(out, "snug_requests_finished_total", "counter", "Requests finished, by reason.");
  for (int r = 0; r < 4; ++r) {
    const char* name = engine::finish_reason_name(static_cast<engine::FinishReason>(r));
    sample(out, "snug_requests_finished_total", m.requests_finished[r],
           "reason=\"" + escape_label(name) + "\"");
  }
  single(out, "snug_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.",
         m.prompt_tokens);
  single(out, "snug_prompt_tokens_cached_total", "counter",
         "Prompt tokens served from the prefix cache.", m.prompt_tokens_cached);
  single(out, "snug_prompt_tokens_computed_total", "counter",
         "Prompt and recomputed tokens run through the model.", m.prompt_tokens_computed);
  single(out, "snug_generated_tokens_total", "counter", "Tokens generated.", m.generated_tokens);
  single(out, "snug_preemptions_total", "counter",
         "Sequences preempted (blocks freed, recomputed later).", m.preemptions);
  single(out, "snug_scheduler_steps_total", "counter", "Forward passes run.", m.steps);
  single(out, "snug_queue_length", "gauge", "Requests waiting to be admitted.", m.waiting);
  header(out, "snug_sequences", "gauge", "Sequences by state.");
  sample(out, "snug_sequences", m.running, "state=\"running\"");
  sample(out, "snug_sequences", m.waiting, "state=\"waiting\"");
  single(out, "snug_kv_blocks_total", "gauge", "KV blocks in the pool.", m.kv_blocks_total);
  header(out, "snug_kv_blocks", "gauge", "KV blocks by state.");
  sample(out, "snug_kv_blocks", m.kv_blocks_used, "state=\"used\"");
  sample(out, "snug_kv_blocks", m.kv_blocks_cached, "state=\"cached\"");
  sample(out, "snug_kv_blocks", m.kv_blocks_free, "state=\"free\"");
  single(out, "snug_prefix_cache_lookup_blocks_total", "counter",
         "Full prompt blocks looked up in the prefix cache.", m.prefix_lookup_blocks);
  single(out, "snug_prefix_cache_hit_blocks_total", "counter",
         "Full prompt blocks found in the prefix cache.", m.prefix_hit_blocks);
  const double rate = m.prefix_lookup_blocks == 0 ? 0.0
                                                  : static_cast<double>(m.prefix_hit_blocks) /
                                                        static_cast<double>(m.prefix_lookup_blocks);
  single(out, "snug_prefix_cache_hit_ratio", "gauge",
         "Prefix-cache hits over lookups since start (0 before any lookup).", number(rate));
  histogram(out, "snug_time_to_first_token_seconds", "Submission to the first generated token.",
            m.time_to_first_token);
  histogram(out, "snug_inter_token_latency_seconds", "Time between a request's generated tokens.",
            m.inter_token_latency);
}

}  // namespace

Route route_of(std::string_view path) {
  if (path == "/v1/completions") return Route::kCompletions;
  if (path == "/v1/chat/completions") return Route::kChatCompletions;
  if (path == "/v1/models") return Route::kModels;
  if (path == "/health") return Route::kHealth;
  if (path == "/metrics") return Route::kMetrics;
  return Route::kOther;
}

const char* route_label(Route r) {
  switch (r) {
    case Route::kCompletions:
      return "/v1/completions";
    case Route::kChatCompletions:
      return "/v1/chat/completions";
    case Route::kModels:
      return "/v1/models";
    case Route::kHealth:
      return "/health";
    case Route::kMetrics:
      return "/metrics";
    default:
      return "other";
  }
}

void HttpCounters::count(Route route, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{route, status}];
}

std::map<std::pair<Route, int>, uint64_t> HttpCounters::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_metrics(const MetricsInput& in) {
  std::string out;
  out.reserve(8192);
  single(&out, "snug_model_loaded", "gauge", "1 once the model is loaded and serving.",
         in.scheduler != nullptr ? 1 : 0);
  if (in.scheduler != nullptr) scheduler_metrics(&out, *in.scheduler);
  if (in.ledger != nullptr) {
    header(&out, "snug_memory_bytes", "gauge", "Bytes held now, by ledger category.");
    for (int k = 0; k < static_cast<int>(memory::Category::kCount); ++k) {
      const auto c = static_cast<memory::Category>(k);
      sample(&out, "snug_memory_bytes", in.ledger->current(c),
             std::string("category=\"") + category_label(c) + "\"");
    }
    header(&out, "snug_memory_peak_bytes", "gauge", "Most bytes held, by ledger category.");
    for (int k = 0; k < static_cast<int>(memory::Category::kCount); ++k) {
      const auto c = static_cast<memory::Category>(k);
      sample(&out, "snug_memory_peak_bytes", in.ledger->peak(c),
             std::string("category=\"") + category_label(c) + "\"");
    }
  }
  single(&out, "snug_process_resident_bytes", "gauge", "Resident set of the process (VmRSS).",
         in.resident_bytes);
  single(&out, "snug_process_peak_resident_bytes", "gauge",
         "Peak resident set of the process (VmHWM).", in.peak_resident_bytes);
  if (in.predicted_peak_bytes > 0)
    single(&out, "snug_predicted_peak_resident_bytes", "gauge",
           "The plan's predicted peak resident set, the server's bound included.",
           in.predicted_peak_bytes);
  if (in.http != nullptr) {
    header(&out, "snug_http_requests_total", "counter", "HTTP requests by route and status.");
    for (const auto& [key, n] : in.http->requests()) {
      sample(&out, "snug_http_requests_total", n,
             fmt::format("route=\"{}\",status=\"{}\"", route_label(key.first), key.second));
    }
    single(&out, "snug_http_connections_refused_total", "counter",
           "Connections answered 503 at once because every handler thread was busy.",
           in.http->refused());
    single(&out, "snug_http_connections_active", "gauge", "Connections being served.",
           in.http->active());
  }
  return out;
}

}  // namespace snug::server
