# check_recompute.cmake: activation recomputation changes memory, not the training function: 3 AdamW steps of the
# small preset (dropout on, same seed and batch) with --recompute none, ffn, attention and layer; every loss,
# gradient norm and final parameter agrees bit for bit (the recomputed forward runs the same ops on the same values
# with the same dropout keys), and the last step's device memory peak falls from each setting to the next. The
# recomputation makes only what the backward reads: by --profile's op counts, --recompute attention runs no residual
# dropout again (out_proj's output, which only the residual stream reads, is not made again: neither as a dropout
# nor as the FFN pre-LN's join, so two LayerNorm forwards a layer more than ffn, the attention's pre-LN and sub-LN,
# for its one product more, qkv) and --recompute layer two more products a layer than attention (out_proj and fc1,
# not fc2).
# cmake -DKOSMOS=<exe> -DCOMPARE=<tool> -DOUT=<prefix> -P check_recompute.cmake
set(common train --preset small --steps 3 --seed 5 --batch 4 --length 128 --log-every 100 --profile)
set(previous_peak "")
foreach(recompute none ffn attention layer)
  execute_process(COMMAND ${KOSMOS} ${common} --recompute ${recompute} --metrics ${OUT}_${recompute}.jsonl
                          --save-weights ${OUT}_${recompute}.safetensors
                  RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "the --recompute ${recompute} run exited with ${status}:\n${output}")
  endif()
  if(NOT recompute STREQUAL "none")
    execute_process(COMMAND ${COMPARE} ${OUT}_none.jsonl ${OUT}_${recompute}.jsonl ${OUT}_none.safetensors
                            ${OUT}_${recompute}.safetensors 0
                    RESULT_VARIABLE same)
    if(NOT same EQUAL 0)
      message(FATAL_ERROR "--recompute ${recompute} does not train bit for bit like --recompute none")
    endif()
  endif()
  file(STRINGS ${OUT}_${recompute}.jsonl steps)
  list(GET steps -1 last)
  string(REGEX MATCH "\"device_peak_gib\":([0-9.eE+-]+)" found "${last}")
  if(NOT found)
    message(FATAL_ERROR "no device_peak_gib in the --recompute ${recompute} metrics: ${last}")
  endif()
  set(peak ${CMAKE_MATCH_1})
  message(STATUS "--recompute ${recompute}: device memory peak ${peak} GiB")
  if(NOT previous_peak STREQUAL "" AND NOT peak LESS previous_peak)
    message(FATAL_ERROR "--recompute ${recompute} peaks at ${peak} GiB, not below the previous setting's "
                        "${previous_peak} GiB")
  endif()
  set(previous_peak ${peak})
  foreach(op matmul dropout_forward layernorm_forward)
    string(REGEX MATCH "\n  ${op} +[0-9.]+ s +[0-9.]+ % +([0-9]+) calls" found "${output}")
    if(NOT found)
      message(FATAL_ERROR "no ${op} line in the --recompute ${recompute} run's profile:\n${output}")
    endif()
    set(${op}_${recompute} ${CMAKE_MATCH_1})
  endforeach()
endforeach()
if(NOT dropout_forward_attention EQUAL dropout_forward_ffn)
  message(FATAL_ERROR "--recompute attention ran ${dropout_forward_attention} dropouts, ffn ${dropout_forward_ffn}: "
                      "the recomputation made a residual dropout (out_proj's output) the backward does not read")
endif()
math(EXPR per_attention "${matmul_attention} - ${matmul_ffn}")
math(EXPR norms_per_attention "${layernorm_forward_attention} - ${layernorm_forward_ffn}")
math(EXPR two_norms "2 * ${per_attention}")
if(NOT norms_per_attention EQUAL two_norms)
  message(FATAL_ERROR "LayerNorm forwards: ffn ${layernorm_forward_ffn}, attention ${layernorm_forward_attention}, "
                      "for ${per_attention} products more; expected two a product (the attention's pre-LN and "
                      "sub-LN): the recomputation made out_proj's output (the FFN pre-LN's join) again")
endif()
math(EXPR per_layer "${matmul_layer} - ${matmul_attention}")
math(EXPR twice "2 * ${per_attention}")
if(per_attention LESS_EQUAL 0 OR NOT per_layer EQUAL twice)
  message(FATAL_ERROR "matmuls: ffn ${matmul_ffn}, attention ${matmul_attention}, layer ${matmul_layer}; expected "
                      "layer to recompute twice as many more than attention as attention does more than ffn (out_proj "
                      "and fc1 against qkv)")
endif()
