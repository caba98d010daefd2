# dynasparse_add_compiled(<src_dir>): the dynasparse::compiled target (see the main
# CMakeLists.txt) from the sources in <src_dir>. Shared by this project's build and by the
# installed package (dynasparseConfig.cmake), which builds the library in the consumer's
# project with the consumer's compiler and flags.
set(DYNASPARSE_COMPILED_SOURCES model.cpp parallel.cpp)
function(dynasparse_add_compiled src_dir)
  list(TRANSFORM DYNASPARSE_COMPILED_SOURCES PREPEND "${src_dir}/" OUTPUT_VARIABLE _sources)
  add_library(dynasparse_compiled STATIC EXCLUDE_FROM_ALL ${_sources})
  add_library(dynasparse::compiled ALIAS dynasparse_compiled)
  target_link_libraries(dynasparse_compiled PUBLIC dynasparse::dynasparse)
  target_compile_definitions(dynasparse_compiled PUBLIC DYNASPARSE_COMPILED)
endfunction()
