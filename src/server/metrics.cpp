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

// The models whose scheduler is loaded, with their label.
struct Served {
  std::string label;  // model="name"
  const engine::SchedulerMetrics* m;
};

// One metric of every loaded model: the header once, a sample per model.
template <typename Get>
void per_model(std::string* out, const char* name, const char* type, const char* help,
               const std::vector<Served>& served, Get get) {
  header(out, name, type, help);
  for (const Served& s : served) sample(out, name, get(*s.m), s.label);
}

void histogram(std::string* out, const char* name, const char* help,
               const std::vector<Served>& served,
               const engine::LatencyHistogram engine::SchedulerMetrics::*field) {
  header(out, name, "histogram", help);
  const std::string bucket = std::string(name) + "_bucket";
  for (const Served& s : served) {
    const engine::LatencyHistogram& h = s.m->*field;
    uint64_t cumulative = 0;
    for (int i = 0; i < engine::LatencyHistogram::kBuckets; ++i) {
      cumulative += h.counts[i];
      sample(out, bucket.c_str(), cumulative,
             s.label + ",le=\"" + number(engine::LatencyHistogram::kBounds[i]) + "\"");
    }
    cumulative += h.counts[engine::LatencyHistogram::kBuckets];
    sample(out, bucket.c_str(), cumulative, s.label + ",le=\"+Inf\"");
    sample(out, (std::string(name) + "_sum").c_str(), number(h.sum), s.label);
    sample(out, (std::string(name) + "_count").c_str(), h.count, s.label);
  }
}

void scheduler_metrics(std::string* out, const std::vector<Served>& sv) {
  using M = engine::SchedulerMetrics;
  per_model(out, "snug_requests_submitted_total", "counter", "Requests given to the scheduler.", sv,
            [](const M& m) { return m.requests_submitted; });
  per_model(out, "snug_requests_rejected_total", "counter",
            "Requests the scheduler refused (full queue, never fits, shutting down).", sv,
            [](const M& m) { return m.requests_rejected; });
  header(out, "snug_requests_finished_total", "counter", "Requests finished, by reason.");
  for (const Served& s : sv) {
    for (int r = 0; r < 4; ++r) {
      const char* name = engine::finish_reason_name(static_cast<engine::FinishReason>(r));
      sample(out, "snug_requests_finished_total", s.m->requests_finished[r],
             s.label + ",reason=\"" + escape_label(name) + "\"");
    }
  }
  per_model(out, "snug_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", sv,
            [](const M& m) { return m.prompt_tokens; });
  per_model(out, "snug_prompt_tokens_cached_total", "counter",
            "Prompt tokens served from the prefix cache.", sv,
            [](const M& m) { return m.prompt_tokens_cached; });
  per_model(out, "snug_prompt_tokens_computed_total", "counter",
            "Prompt and recomputed tokens run through the model.", sv,
            [](const M& m) { return m.prompt_tokens_computed; });
  per_model(out, "snug_prompt_chunks_total", "counter",
            "Pieces the computed prompt tokens ran in, one per request and step.", sv,
            [](const M& m) { return m.prompt_chunks; });
  per_model(out, "snug_generated_tokens_total", "counter", "Tokens generated.", sv,
            [](const M& m) { return m.generated_tokens; });
  per_model(out, "snug_preemptions_total", "counter",
            "Sequences preempted (blocks freed, recomputed later).", sv,
            [](const M& m) { return m.preemptions; });
  per_model(out, "snug_scheduler_steps_total", "counter", "Forward passes run.", sv,
            [](const M& m) { return m.steps; });
  per_model(out, "snug_queue_length", "gauge", "Requests waiting to be admitted.", sv,
            [](const M& m) { return m.waiting; });
  header(out, "snug_sequences", "gauge", "Sequences by state.");
  for (const Served& s : sv) {
    sample(out, "snug_sequences", s.m->running, s.label + ",state=\"running\"");
    sample(out, "snug_sequences", s.m->waiting, s.label + ",state=\"waiting\"");
  }
  per_model(out, "snug_kv_blocks_total", "gauge", "KV blocks in the pool.", sv,
            [](const M& m) { return m.kv_blocks_total; });
  header(out, "snug_kv_blocks", "gauge", "KV blocks by state.");
  for (const Served& s : sv) {
    sample(out, "snug_kv_blocks", s.m->kv_blocks_used, s.label + ",state=\"used\"");
    sample(out, "snug_kv_blocks", s.m->kv_blocks_cached, s.label + ",state=\"cached\"");
    sample(out, "snug_kv_blocks", s.m->kv_blocks_free, s.label + ",state=\"free\"");
  }
  per_model(out, "snug_prefix_cache_lookup_blocks_total", "counter",
            "Full prompt blocks looked up in the prefix cache.", sv,
            [](const M& m) { return m.prefix_lookup_blocks; });
  per_model(out, "snug_prefix_cache_hit_blocks_total", "counter",
            "Full prompt blocks found in the prefix cache.", sv,
            [](const M& m) { return m.prefix_hit_blocks; });
  per_model(out, "snug_prefix_cache_hit_ratio", "gauge",
            "Prefix-cache hits over lookups since the model loaded (0 before any lookup).", sv,
            [](const M& m) {
              return number(m.prefix_lookup_blocks == 0
                                ? 0.0
                                : static_cast<double>(m.prefix_hit_blocks) /
                                      static_cast<double>(m.prefix_lookup_blocks));
            });
  histogram(out, "snug_time_to_first_token_seconds", "Submission to the first generated token.", sv,
            &M::time_to_first_token);
  histogram(out, "snug_inter_token_latency_seconds", "Time between a request's generated tokens.",
            sv, &M::inter_token_latency);
}

void model_metrics(std::string* out, const std::vector<engine::ModelStatus>& models) {
  const auto label = [](const engine::ModelStatus& s) {
    return "model=\"" + escape_label(s.name) + "\"";
  };
  header(out, "snug_model_state", "gauge", "1 for each model's state now.");
  for (const auto& s : models) {
    for (auto st :
         {engine::ModelState::kUnloaded, engine::ModelState::kLoading, engine::ModelState::kLoaded,
          engine::ModelState::kUnloading, engine::ModelState::kTooLarge}) {
      sample(out, "snug_model_state", s.state == st ? 1 : 0,
             label(s) + ",state=\"" + engine::model_state_name(st) + "\"");
    }
  }
  const auto each = [&](const char* name, const char* type, const char* help, auto get) {
    header(out, name, type, help);
    for (const auto& s : models) sample(out, name, get(s), label(s));
  };
  each("snug_model_planned_bytes", "gauge",
       "Bytes the model's plan reserves from the budget while it is loaded.",
       [](const engine::ModelStatus& s) { return s.planned_bytes; });
  each("snug_model_requests_in_flight", "gauge", "Requests holding the model loaded.",
       [](const engine::ModelStatus& s) { return s.in_flight; });
  each("snug_model_requests_waiting", "gauge",
       "Requests waiting for the model to load (for room in the budget).",
       [](const engine::ModelStatus& s) { return s.waiting; });
  each("snug_model_closing", "gauge",
       "1 while the model takes no new requests, to make room for a waiting model.",
       [](const engine::ModelStatus& s) { return s.closing ? 1 : 0; });
  each("snug_model_loads_total", "counter", "Times the model was loaded.",
       [](const engine::ModelStatus& s) { return s.loads; });
  each("snug_model_load_failures_total", "counter", "Loads that failed.",
       [](const engine::ModelStatus& s) { return s.load_failures; });
  each("snug_model_evictions_total", "counter",
       "Times the model was unloaded to make room for another.",
       [](const engine::ModelStatus& s) { return s.evictions; });
  each("snug_model_idle_unloads_total", "counter",
       "Times the model was unloaded after its keep-alive.",
       [](const engine::ModelStatus& s) { return s.idle_unloads; });
  each("snug_model_load_seconds_total", "counter", "Time spent loading the model.",
       [](const engine::ModelStatus& s) { return number(s.load_seconds_total); });
}

void tenant_metrics(std::string* out, const std::vector<TenantStatus>& tenants) {
  const auto label = [](const TenantStatus& t) {
    return "tenant=\"" + escape_label(t.name) + "\"";
  };
  header(out, "snug_tenant_requests_total", "counter",
         "Requests of each tenant, admitted or refused by its quotas.");
  for (const TenantStatus& t : tenants) {
    sample(out, "snug_tenant_requests_total", t.admitted, label(t) + ",outcome=\"admitted\"");
    sample(out, "snug_tenant_requests_total", t.refused_rate,
           label(t) + ",outcome=\"rate_limited\"");
    sample(out, "snug_tenant_requests_total", t.refused_concurrency,
           label(t) + ",outcome=\"concurrency_limited\"");
    sample(out, "snug_tenant_requests_total", t.refused_model,
           label(t) + ",outcome=\"model_not_allowed\"");
  }
  header(out, "snug_tenant_requests_in_flight", "gauge", "Requests of each tenant running now.");
  for (const TenantStatus& t : tenants)
    sample(out, "snug_tenant_requests_in_flight", t.in_flight, label(t));
  header(out, "snug_tenant_tokens_total", "counter",
         "Prompt and completion tokens of each tenant's finished requests.");
  for (const TenantStatus& t : tenants) sample(out, "snug_tenant_tokens_total", t.tokens, label(t));
  header(out, "snug_tenant_tokens_last_minute", "gauge",
         "Tokens of each tenant's requests that finished in the last 60 s.");
  for (const TenantStatus& t : tenants)
    sample(out, "snug_tenant_tokens_last_minute", t.tokens_last_minute, label(t));
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
  std::vector<Served> served;
  for (const engine::ModelStatus& m : in.models) {
    if (m.scheduler) served.push_back({"model=\"" + escape_label(m.name) + "\"", &*m.scheduler});
  }
  single(&out, "snug_model_loaded", "gauge", "Models loaded and serving now.", served.size());
  if (in.budget_bytes > 0) {
    single(&out, "snug_budget_bytes", "gauge", "The memory budget the server plans against.",
           in.budget_bytes);
    single(&out, "snug_budget_reserved_bytes", "gauge",
           "Bytes of the budget reserved now (process, HTTP server, loaded models).",
           in.budget_reserved_bytes);
  }
  if (!in.models.empty()) model_metrics(&out, in.models);
  if (!served.empty()) scheduler_metrics(&out, served);
  if (!in.tenants.empty()) {
    tenant_metrics(&out, in.tenants);
    bool shares = false;
    for (const Served& sv : served) shares = shares || !sv.m->tenant_kv_blocks.empty();
    if (shares) {
      header(&out, "snug_tenant_kv_blocks", "gauge",
             "KV blocks counted against each tenant's share in each model: its running requests "
             "at the blocks they may grow to.");
      for (const Served& sv : served) {
        const auto& blocks = sv.m->tenant_kv_blocks;
        for (size_t t = 0; t < blocks.size() && t < in.tenants.size(); ++t) {
          sample(&out, "snug_tenant_kv_blocks", blocks[t],
                 sv.label + ",tenant=\"" + escape_label(in.tenants[t].name) + "\"");
        }
      }
    }
  }
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
