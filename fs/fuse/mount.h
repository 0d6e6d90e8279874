// FuseMount: mounting a kmsfs volume on a directory and serving it until it is unmounted.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/base/status.h"
#include "fs/core/data_key_source.h"
#include "fs/core/volume.h"

namespace kmsfs::fs {

struct FuseMountOptions {
  std::string cipherdir;  // shown as the mount's source (fsname) in /proc/self/mountinfo
  std::string mountpoint;
  // Options for libfuse and the kernel, one per element ("allow_other", "ro", "nodev", ...).
  // default_permissions is always added: the kernel enforces modes, keyd's policy comes on top.
  std::vector<std::string> fuse_options;
  bool debug = false;         // libfuse request tracing to stderr
  unsigned max_threads = 10;  // worker threads of the session loop
  double timeout = 1.0;       // kernel attribute/entry cache, seconds
  // Revocation bound for open handles (key_revalidate=): every period, keyd is asked again for
  // every open file; a refusal stops the handle's I/O and drops the kernel's cached pages.
  // Zero disables it (not offered as a mount option).
  std::chrono::milliseconds key_revalidate{5000};
  // The mount's read-ahead (the bdi's read_ahead_kb), set once the mount is live; 0 leaves the
  // kernel's default (128 KiB). Needs root; ignored otherwise.
  unsigned read_ahead_kb = 1024;
};

// Keeps libfuse out of every header but fs/fuse's own: main.cc sees only this class.
class FuseMount {
 public:
  // Opens the cipher directory, mounts (as root directly, otherwise through fusermount3) and
  // installs SIGINT/SIGTERM/SIGHUP handlers that end Serve(). After OK the mount is visible.
  // `volume` and `keys` must outlive the FuseMount. kInvalidArgument for options libfuse
  // rejects; kIo for mount failures (libfuse prints the reason to stderr).
  static Result<std::unique_ptr<FuseMount>> Mount(Volume* volume, DataKeySource* keys,
                                                  const FuseMountOptions& options);
  // Unmounts if still mounted.
  ~FuseMount();
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

  // Serves requests with a multi-threaded loop until the file system is unmounted
  // (fusermount3 -u, umount) or a signal arrives; then unmounts. Call once. Runs the
  // revalidation thread (key_revalidate) for as long as the loop runs.
  Status Serve();

 private:
  struct Impl;
  explicit FuseMount(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kmsfs::fs
