# prepare_demo_data.cmake: the synthetic corpus (200 documents) prepared for the tiny preset (28-pixel images,
# 8 slots, sequences of 128) with the shipped demo tokenizer, for the tests that train on a real dataset.
# cmake -DKOSMOS=<exe> -DOUT=<folder> -P prepare_demo_data.cmake
file(REMOVE_RECURSE ${OUT})
execute_process(COMMAND ${KOSMOS} data synth --out ${OUT}/corpus --n 200 --image-size 32 RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "kosmos data synth exited with ${status}")
endif()
execute_process(COMMAND ${KOSMOS} data prepare --stream caption=${OUT}/corpus/caption.jsonl:2
                        --stream interleaved=${OUT}/corpus/interleaved.jsonl --stream text=${OUT}/corpus/text.jsonl
                        --out ${OUT}/dataset --length 128 --image-size 28 --image-slots 8 --shard-sequences 32
                        --no-progress
                RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "kosmos data prepare exited with ${status}")
endif()
