// fs_content_bench: sequential 1 MiB writes and reads through fs::FileContent over a real file on
// tmpfs (/dev/shm by default), so the figure is the codec's cost — AES-256-GCM per 4 KiB block,
// nonces, metadata entries, batching — and not a disk's. A raw Aes256Gcm pass over the same bytes
// gives the ceiling ("close to AES-GCM speed" is the goal), and plain pwrite/pread of the same
// sizes on the same filesystem show what the backing file itself costs (growing a tmpfs file
// allocates and zeroes pages, so appends are slower than overwrites even without encryption).
//
//   fs_content_bench [--mib N] [--dir DIR] [--rounds R]
// Output: a human line per phase, then "gcm_seal_mb_per_s", "raw_append_mb_per_s",
// "raw_read_mb_per_s", "append_mb_per_s", "overwrite_mb_per_s", "read_mb_per_s"
// (MB = 10^6 B; best of R rounds).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "common/base/bytes.h"
#include "common/base/unique_fd.h"
#include "common/crypto/aead.h"
#include "common/crypto/random.h"
#include "common/crypto/secret.h"
#include "common/format/ids.h"
#include "fs/core/file_content.h"
#include "fs/core/posix_backing_file.h"

namespace {

using kmsfs::Bytes;
using Clock = std::chrono::steady_clock;
constexpr size_t kChunk = size_t{1} << 20;

struct Options {
  uint64_t mib = 256;
  std::string dir = "/dev/shm";
  int rounds = 3;
};

[[noreturn]] void Usage() {
  std::fprintf(stderr, "usage: fs_content_bench [--mib N] [--dir DIR] [--rounds R]\n");
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) Usage();
    const char* v = argv[++i];
    if (arg == "--mib") {
      o.mib = std::strtoull(v, nullptr, 10);
    } else if (arg == "--dir") {
      o.dir = v;
    } else if (arg == "--rounds") {
      o.rounds = std::atoi(v);
    } else {
      Usage();
    }
  }
  if (o.mib == 0 || o.rounds <= 0) Usage();
  return o;
}

[[noreturn]] void Die(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fs_content_bench: %s: %s\n", what, detail.c_str());
  std::exit(1);
}

double MbPerS(uint64_t bytes, Clock::duration d) {
  return static_cast<double>(bytes) / 1e6 / std::chrono::duration<double>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = Parse(argc, argv);
  const uint64_t total = opt.mib * kChunk;
  std::string path = opt.dir + "/kmsfs-bench-XXXXXX";
  const int raw_fd = ::mkstemp(path.data());
  if (raw_fd < 0) Die("mkstemp", path);
  ::unlink(path.c_str());  // anonymous from here on; gone when the fd closes
  kmsfs::fs::PosixBackingFile backing{kmsfs::UniqueFd(raw_fd)};

  kmsfs::format::Id128 volume_id, file_id;
  kmsfs::crypto::RandomBytes(volume_id);
  kmsfs::crypto::RandomBytes(file_id);
  const kmsfs::crypto::SecretBytes dek = kmsfs::crypto::RandomSecret(32);
  Bytes data(kChunk);
  kmsfs::crypto::RandomBytes(data);
  Bytes out(kChunk);

  // Ceiling: AES-256-GCM over the same bytes in 4 KiB blocks with one context.
  double gcm_best = 0;
  {
    auto gcm = kmsfs::crypto::Aes256Gcm::Create(dek.span());
    if (!gcm.ok()) Die("gcm", gcm.error().ToString());
    uint8_t nonce[12] = {1};
    uint8_t aad[49] = {};
    uint8_t tag[16];
    for (int r = 0; r < opt.rounds; ++r) {
      const auto t0 = Clock::now();
      for (uint64_t done = 0; done < total; done += kChunk) {
        for (size_t off = 0; off < kChunk; off += 4096) {
          if (!gcm->Seal(nonce, aad, {data.data() + off, 4096}, {out.data() + off, 4096}, tag).ok()) {
            Die("seal", "failed");
          }
        }
      }
      gcm_best = std::max(gcm_best, MbPerS(total, Clock::now() - t0));
    }
  }

  // Baseline: the same calls without encryption, straight to the backing file.
  double raw_append_best = 0, raw_read_best = 0;
  for (int r = 0; r < opt.rounds; ++r) {
    if (auto st = backing.Truncate(0); !st.ok()) Die("truncate", st.ToString());
    auto t0 = Clock::now();
    for (uint64_t off = 0; off < total; off += kChunk) {
      if (auto st = backing.PWrite(data, off); !st.ok()) Die("raw append", st.ToString());
    }
    raw_append_best = std::max(raw_append_best, MbPerS(total, Clock::now() - t0));
    t0 = Clock::now();
    for (uint64_t off = 0; off < total; off += kChunk) {
      auto n = backing.PRead(out, off);
      if (!n.ok() || *n != kChunk) Die("raw read", n.ok() ? "short" : n.error().ToString());
    }
    raw_read_best = std::max(raw_read_best, MbPerS(total, Clock::now() - t0));
  }

  double append_best = 0, overwrite_best = 0, read_best = 0;
  for (int r = 0; r < opt.rounds; ++r) {
    if (auto st = backing.Truncate(0); !st.ok()) Die("truncate", st.ToString());
    if (auto st = backing.PWrite(Bytes(4096, 0), 0); !st.ok()) Die("header", st.ToString());
    auto fc = kmsfs::fs::FileContent::Open(volume_id, file_id, dek, &backing);
    if (!fc.ok()) Die("open", fc.error().ToString());
    if (auto st = (*fc)->InitializeEmpty(); !st.ok()) Die("init", st.ToString());

    auto t0 = Clock::now();
    for (uint64_t off = 0; off < total; off += kChunk) {
      if (auto st = (*fc)->Write(data, off); !st.ok()) Die("append", st.ToString());
    }
    append_best = std::max(append_best, MbPerS(total, Clock::now() - t0));

    t0 = Clock::now();
    for (uint64_t off = 0; off < total; off += kChunk) {
      if (auto st = (*fc)->Write(data, off); !st.ok()) Die("overwrite", st.ToString());
    }
    overwrite_best = std::max(overwrite_best, MbPerS(total, Clock::now() - t0));

    t0 = Clock::now();
    for (uint64_t off = 0; off < total; off += kChunk) {
      auto n = (*fc)->Read(out, off);
      if (!n.ok() || *n != kChunk) Die("read", n.ok() ? "short" : n.error().ToString());
    }
    read_best = std::max(read_best, MbPerS(total, Clock::now() - t0));
    if (std::memcmp(out.data(), data.data(), kChunk) != 0) Die("read", "wrong plaintext");
  }

  std::printf("%llu MiB in 1 MiB calls on %s, best of %d\n",
              static_cast<unsigned long long>(opt.mib), opt.dir.c_str(), opt.rounds);
  std::printf("  AES-256-GCM seal, 4 KiB blocks : %8.1f MB/s (ceiling)\n", gcm_best);
  std::printf("  pwrite append, no encryption   : %8.1f MB/s (backing cost)\n", raw_append_best);
  std::printf("  pread, no encryption           : %8.1f MB/s (backing cost)\n", raw_read_best);
  std::printf("  FileContent append             : %8.1f MB/s\n", append_best);
  std::printf("  FileContent overwrite          : %8.1f MB/s\n", overwrite_best);
  std::printf("  FileContent read               : %8.1f MB/s\n", read_best);
  std::printf("gcm_seal_mb_per_s %.1f\nraw_append_mb_per_s %.1f\nraw_read_mb_per_s %.1f\n"
              "append_mb_per_s %.1f\noverwrite_mb_per_s %.1f\nread_mb_per_s %.1f\n",
              gcm_best, raw_append_best, raw_read_best, append_best, overwrite_best, read_best);
  return 0;
}
