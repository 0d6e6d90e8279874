# unit_fs: every tests/unit/fs/**/*_test.cc, with the fs fakes (tests/fakes).
# Included from tests/CMakeLists.txt, so CMAKE_CURRENT_SOURCE_DIR is tests/.
add_library(kmsfs_fs_fakes STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/fakes/fake_data_key_source.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/fakes/faulty_backing_file.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/fakes/mem_backing_file.cc)
target_link_libraries(kmsfs_fs_fakes PUBLIC kmsfs_fs_core kmsfs_crypto kmsfs_format kmsfs_base)

set(kmsfs_fs_test_libs kmsfs_fs_fakes kmsfs_fs_core)
if(TARGET kmsfs_fs_keysource)
  list(APPEND kmsfs_fs_test_libs kmsfs_fs_keysource)
endif()
if(TARGET kmsfs_fs_lifecycle)
  list(APPEND kmsfs_fs_test_libs kmsfs_fs_lifecycle)
endif()
if(TARGET kmsfs_fs_fuse)
  list(APPEND kmsfs_fs_test_libs kmsfs_fs_fuse)  # fuse/request_kind_test.cc
endif()
if(TARGET kmsfs_fs_fsck)
  list(APPEND kmsfs_fs_test_libs kmsfs_fs_fsck)
endif()
kmsfs_unit_suite(unit_fs fs ${kmsfs_fs_test_libs} kmsfs_crypto kmsfs_format kmsfs_base
                 Threads::Threads)
