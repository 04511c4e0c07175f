#include "model/pack_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

namespace snug::model {
namespace {

constexpr char kMagic[8] = {'S', 'N', 'U', 'G', 'P', 'A', 'C', 'K'};
constexpr uint32_t kVersion = 2;  // 2: the model path after the key
constexpr uint64_t kPage = 4096;

// The header's fixed part; the key's bytes follow it, then zeros to a page.
struct PackHeader {
  char magic[8];
  uint32_t version;
  uint32_t n_matrices;
  uint64_t file_bytes;
  uint64_t key_bytes;
  uint64_t path_bytes;
};

// The key's records: the model file's identity (4 x 8 bytes), each layout
// fingerprint (type and FNV-1a of the packed test matrix, 2 x 8), each
// matrix (6 x 8).
constexpr uint64_t kIdentityBytes = 32, kLayoutBytes = 16, kMatrixBytes = 48;

std::vector<uint8_t> header_of(const PackKey& key) {
  PackHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.n_matrices = static_cast<uint32_t>(key.matrix_bytes.size());
  h.file_bytes = key.file_bytes();
  h.key_bytes = key.bytes.size();
  h.path_bytes = key.model_path.size();
  std::vector<uint8_t> out(key.header_bytes(), 0);
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, key.bytes.data(), key.bytes.size());
  std::memcpy(out.data() + sizeof h + key.bytes.size(), key.model_path.data(),
              key.model_path.size());
  return out;
}

uint64_t fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Error io_error(const char* what, const std::string& path) {
  return make_error("pack file '", path, "': ", what, ": ", std::strerror(errno));
}

}  // namespace

uint64_t pack_header_bytes(size_t n_types, size_t n_matrices, size_t path_bytes) {
  const uint64_t key = kIdentityBytes + kLayoutBytes * n_types + kMatrixBytes * n_matrices;
  return (sizeof(PackHeader) + key + path_bytes + kPage - 1) / kPage * kPage;
}

std::string pack_model_path(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  return ec ? path : p.lexically_normal().string();
}

uint64_t PackKey::header_bytes() const {
  return (sizeof(PackHeader) + bytes.size() + model_path.size() + kPage - 1) / kPage * kPage;
}

uint64_t PackKey::file_bytes() const {
  return matrix_bytes.empty() ? header_bytes()
                              : offset(matrix_bytes.size() - 1) + matrix_bytes.back();
}

uint64_t PackKey::offset(size_t i) const {
  uint64_t at = header_bytes();
  for (size_t j = 0; j < i; ++j) at += (matrix_bytes[j] + 63) / 64 * 64;
  return at;
}

PackKeyBuilder::PackKeyBuilder(const FileIdentity& model, std::string model_path) {
  key_.model_path = std::move(model_path);
  for (uint64_t x : {model.device, model.inode, model.size, static_cast<uint64_t>(model.mtime_ns)})
    add_u64(x);
}

void PackKeyBuilder::add_u64(uint64_t v) {
  for (int b = 0; b < 8; ++b) key_.bytes.push_back(static_cast<uint8_t>(v >> (8 * b)));
}

void PackKeyBuilder::add_layout(uint32_t type, const uint8_t* packed, size_t n) {
  add_u64(type);
  add_u64(fnv1a(packed, n));
}

void PackKeyBuilder::add_matrix(uint32_t type, int64_t rows, int64_t cols, uint64_t row_bytes,
                                uint64_t file_offset, uint64_t packed_bytes) {
  for (uint64_t x : {static_cast<uint64_t>(type), static_cast<uint64_t>(rows),
                     static_cast<uint64_t>(cols), row_bytes, file_offset, packed_bytes})
    add_u64(x);
  key_.matrix_bytes.push_back(packed_bytes);
}

std::string pack_file_path(const std::string& dir, const std::string& model_path,
                           const PackKey& key) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a(key.bytes.data(), key.bytes.size())));
  std::string d = dir.empty() ? "." : dir;
  if (d.back() != '/') d += '/';
  return d + base_name(model_path) + "." + hex + ".snugpack";
}

Result<std::optional<MappedFile>> open_pack_file(const std::string& path, const PackKey& key,
                                                 std::string* stale) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<MappedFile>();
    return io_error("cannot examine it", path);
  }
  if (!S_ISREG(st.st_mode)) return make_error("pack file '", path, "' is not a regular file");
  const std::vector<uint8_t> want = header_of(key);
  const uint64_t file_bytes = key.file_bytes();
  if (static_cast<uint64_t>(st.st_size) != file_bytes) {
    *stale = "its size is not this model's packed size";
    return std::optional<MappedFile>();
  }
  SNUG_ASSIGN_OR_RETURN(MappedFile map, MappedFile::open(path));
  if (map.size() != file_bytes) {  // replaced between the stat and the open
    *stale = "its size is not this model's packed size";
    return std::optional<MappedFile>();
  }
  PackHeader got;
  std::memcpy(&got, map.data(), sizeof got);
  if (std::memcmp(got.magic, kMagic, sizeof kMagic) != 0) {
    *stale = "it is not a snug pack file";
  } else if (got.version != kVersion) {
    *stale = "it has another format version";
  } else if (std::memcmp(map.data(), want.data(), want.size()) != 0) {
    *stale = "it was packed from another model file or for another packed layout";
  } else {
    return std::optional<MappedFile>(std::move(map));
  }
  return std::optional<MappedFile>();
}

namespace {

// The model path and identity a pack file's header records; false for a file
// that is not a readable pack file of this format.
bool read_pack_origin(const std::string& path, std::string* model_path, uint8_t identity[32]) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  PackHeader h{};
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
            ::pread(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h) &&
            std::memcmp(h.magic, kMagic, sizeof kMagic) == 0 && h.version == kVersion &&
            h.key_bytes >= kIdentityBytes && h.path_bytes > 0 && h.path_bytes <= 4096 &&
            h.key_bytes <= kPage * 1024;
  if (ok) {
    model_path->resize(h.path_bytes);
    ok = ::pread(fd, identity, kIdentityBytes, sizeof h) == static_cast<ssize_t>(kIdentityBytes) &&
         ::pread(fd, model_path->data(), h.path_bytes,
                 static_cast<off_t>(sizeof h + h.key_bytes)) == static_cast<ssize_t>(h.path_bytes);
  }
  ::close(fd);
  return ok;
}

}  // namespace

int remove_stale_packs(const std::string& path, const PackKey& key) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string name = base_name(path);
  // <model file name>.<16 hex digits>.snugpack: the model's name is what is
  // before the last two dots.
  constexpr size_t kSuffix = 1 + 16 + sizeof(".snugpack") - 1;
  if (name.size() <= kSuffix) return 0;
  const std::string prefix = name.substr(0, name.size() - kSuffix + 1);  // "<model>."
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string other = entry.path().filename().string();
    if (other == name || other.size() != name.size() || other.rfind(prefix, 0) != 0 ||
        other.compare(other.size() - 9, 9, ".snugpack") != 0) {
      continue;
    }
    std::string model_path;
    uint8_t identity[kIdentityBytes];
    if (!read_pack_origin(entry.path().string(), &model_path, identity)) continue;
    if (model_path != key.model_path ||
        std::memcmp(identity, key.bytes.data(), kIdentityBytes) == 0) {
      continue;  // another model of that name, or this one packed for another layout
    }
    if (::unlink(entry.path().c_str()) != 0) continue;
    ++removed;
    // Its lock file too, unless a builder holds it.
    const std::string lock = entry.path().string() + ".lock";
    if (int fd = ::open(lock.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC); fd >= 0) {
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) ::unlink(lock.c_str());
      ::close(fd);
    }
  }
  return removed;
}

Result<PackFileLock> PackFileLock::acquire(const std::string& path) {
  const std::string lock = path + ".lock";
  PackFileLock l;
  l.fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (l.fd_ < 0) return io_error("cannot open its lock file", lock);
  int r;
  do {
    r = ::flock(l.fd_, LOCK_EX);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return io_error("cannot lock", lock);
  return l;
}

PackFileLock::PackFileLock(PackFileLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}

PackFileLock::~PackFileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the lock
}

Result<PackFileWriter> PackFileWriter::create(const std::string& path, const PackKey& key) {
  PackFileWriter w;
  w.path_ = path;
  w.tmp_ = path + ".tmp." + std::to_string(::getpid());
  ::unlink(w.tmp_.c_str());  // a leftover of a crashed process that had this pid
  w.fd_ = ::open(w.tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (w.fd_ < 0) return io_error("cannot create", w.tmp_);
  if (int e = ::posix_fallocate(w.fd_, 0, static_cast<off_t>(key.file_bytes())); e != 0) {
    errno = e;
    return io_error("cannot allocate its space", w.tmp_);
  }
  const std::vector<uint8_t> header = header_of(key);
  SNUG_RETURN_IF_ERROR(w.write(0, header.data(), header.size()));
  return w;
}

PackFileWriter::PackFileWriter(PackFileWriter&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)), tmp_(std::move(o.tmp_)) {}

PackFileWriter::~PackFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

Status PackFileWriter::write(uint64_t offset, const void* data, uint64_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t k = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return io_error("cannot write", tmp_);
    p += k;
    offset += static_cast<uint64_t>(k);
    n -= static_cast<uint64_t>(k);
  }
  return ok_status();
}

Status PackFileWriter::commit() {
  if (::fsync(fd_) != 0) return io_error("cannot sync", tmp_);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    return io_error("cannot rename into place", path_);
  ::close(fd_);
  fd_ = -1;
  // The directory entry too, so that a crash after this leaves the file.
  const size_t slash = path_.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  if (int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
    ::fsync(d);
    ::close(d);
  }
  return ok_status();
}

}  // namespace snug::model
