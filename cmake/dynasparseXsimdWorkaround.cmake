# Debian's xsimd 8 package declares an interface dependency on a target named `xtl` but its
# config file never finds xtl, so linking the `xsimd` target asks the linker for -lxtl.
# xsimd needs xtl only for xtl::xcomplex support (XSIMD_ENABLE_XTL_COMPLEX), which we do not
# use: use xtl's package when it is installed, otherwise drop the dangling name.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_dynasparse_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_dynasparse_xsimd_links AND "xtl" IN_LIST _dynasparse_xsimd_links)
    find_package(xtl QUIET)
    if(NOT TARGET xtl)
      list(REMOVE_ITEM _dynasparse_xsimd_links xtl)
      set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${_dynasparse_xsimd_links}")
    endif()
  endif()
  unset(_dynasparse_xsimd_links)
endif()
