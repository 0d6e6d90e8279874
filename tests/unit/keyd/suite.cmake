# unit_keyd: every tests/unit/keyd/**/*_test.cc, linked with the keyd module libraries that exist.
# A new keyd module adds its library target to this list.
set(kmsfs_keyd_test_libs)
foreach(lib kmsfs_keyd_store kmsfs_keyd_policy kmsfs_keyd_audit kmsfs_keyd_rotation
            kmsfs_keyd_service kmsfs_keyd_server)
  if(TARGET ${lib})
    list(APPEND kmsfs_keyd_test_libs ${lib})
  endif()
endforeach()
kmsfs_unit_suite(unit_keyd keyd ${kmsfs_keyd_test_libs} kmsfs_base kmsfs_crypto Threads::Threads)
