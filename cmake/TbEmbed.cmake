# tb_embed_files(<out-var> SYMBOL <c-name> FILES <files...>)
# Generates a C source embedding FILES (in the given order) as a
# tb_embedded_file_t table named SYMBOL; sets <out-var> to its path.
function(tb_embed_files out_var)
  cmake_parse_arguments(E "" "SYMBOL" "FILES" ${ARGN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${E_SYMBOL}.c)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} "-DOUT=${out}" "-DSYMBOL=${E_SYMBOL}" "-DFILES=${E_FILES}"
            -P ${PROJECT_SOURCE_DIR}/cmake/embed_files.cmake
    DEPENDS ${E_FILES} ${PROJECT_SOURCE_DIR}/cmake/embed_files.cmake
    COMMENT "Embedding ${E_SYMBOL}"
    VERBATIM)
  set(${out_var} ${out} PARENT_SCOPE)
endfunction()
