// tensor_parallel.cpp: the column- and row-parallel linear pairs (see tensor_parallel.h).
#include "parallel/tensor_parallel.h"

namespace kosmos::parallel {

void column_parallel_forward(Device & device, Stream & stream, TensorView y_local, TensorView x, TensorView w_local,
                             TensorView b_local) {
  op_run(device, Matmul{y_local, x, w_local, b_local, false, true}, stream);
}

void column_parallel_backward(Device & device, Stream & stream, Comm & tp, TensorView dx, TensorView dw_local,
                              TensorView db_local, TensorView dy_local, TensorView x, TensorView w_local) {
  matmul_backward(device, MatmulBackward{dx, dw_local, db_local, dy_local, x, w_local, false, true}, stream);
  tp.all_reduce(dx, ReduceOp::kSum, stream);  // each rank's dx holds only its output columns' share
}

void row_parallel_forward(Device & device, Stream & stream, Comm & tp, TensorView y, TensorView x_local,
                          TensorView w_local, TensorView bias) {
  op_run(device, Matmul{y, x_local, w_local, TensorView{}, false, true}, stream);
  tp.all_reduce(y, ReduceOp::kSum, stream);
  if (bias.present()) op_run(device, Add{y, y, bias}, stream);  // once, after the sum
}

void row_parallel_backward(Device & device, Stream & stream, TensorView dx_local, TensorView dw_local, TensorView dbias,
                           TensorView dy, TensorView x_local, TensorView w_local) {
  matmul_backward(device, MatmulBackward{dx_local, dw_local, dbias, dy, x_local, w_local, false, true}, stream);
}

}  // namespace kosmos::parallel
