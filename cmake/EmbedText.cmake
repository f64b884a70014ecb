# recgpt_embed_text(<output var> <input file> <function name>): generates a source defining
# `std::string_view recgpt::<function name>()` that returns the bytes of the input file (cmake/embed_text.cmake),
# and appends it to <output var>. For data the binary must carry wherever it runs (corpus, workflows, catalogue).
function(recgpt_embed_text sources input function)
  set(output ${CMAKE_CURRENT_BINARY_DIR}/${function}.cpp)
  add_custom_command(
    OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -DINPUT=${input} -DOUTPUT=${output} -DFUNCTION=${function}
            -P ${PROJECT_SOURCE_DIR}/cmake/embed_text.cmake
    DEPENDS ${input} ${PROJECT_SOURCE_DIR}/cmake/embed_text.cmake
    COMMENT "Embedding ${input}")
  set(${sources} ${${sources}} ${output} PARENT_SCOPE)
endfunction()
