// tensor_parallel.h: Megatron's conjugate linear pairs over a tensor-parallel group, as explicit forward/backward
// functions (there is no autograd).
//   column-parallel: W split on its output dim, W = [W_1; ...; W_tp] (rows of the [out, in] matrix), each rank
//     y_r = x W_r^T + b_r. Forward: x is replicated (identity). Backward: dx = sum over ranks of dy_r W_r
//     (an all-reduce), dW_r and db_r stay local.
//   row-parallel: W split on its input dim, W = [W_1 ... W_tp] (columns), x split the same way, y = sum over ranks
//     of x_r W_r^T (an all-reduce), plus the bias once. Backward: dy is replicated (identity), dx_r = dy W_r,
//     dW_r = dy^T x_r, and the replicated bias gets the full dy (each rank the same value).
// A column-parallel layer feeding a row-parallel one (fc1 then fc2) needs one all-reduce each way.
#pragma once

#include "backends/device.h"
#include "parallel/comm.h"

namespace kosmos::parallel {

// y_local [rows, out/tp] = x [rows, in] w_local^T [out/tp, in] + b_local [out/tp] (absent: no bias).
void column_parallel_forward(Device & device, Stream & stream, TensorView y_local, TensorView x, TensorView w_local,
                             TensorView b_local);
// dx [rows, in] (overwritten, all-reduced over tp), dw_local and db_local (accumulated).
void column_parallel_backward(Device & device, Stream & stream, Comm & tp, TensorView dx, TensorView dw_local,
                              TensorView db_local, TensorView dy_local, TensorView x, TensorView w_local);

// y [rows, out] = all-reduce over tp of x_local [rows, in/tp] w_local^T [out, in/tp], then + bias [out].
void row_parallel_forward(Device & device, Stream & stream, Comm & tp, TensorView y, TensorView x_local,
                          TensorView w_local, TensorView bias);
// dx_local [rows, in/tp] (overwritten), dw_local and dbias (accumulated; dbias equal on every rank).
void row_parallel_backward(Device & device, Stream & stream, TensorView dx_local, TensorView dw_local, TensorView dbias,
                           TensorView dy, TensorView x_local, TensorView w_local);

}  // namespace kosmos::parallel
