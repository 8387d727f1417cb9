# The binary family: sigmoid_bce (BCE with logits), binary_ce (BCE on
# probabilities) and categorical_ce (CE on probabilities).  Included by the
# kernel modules after _kernels.pxi (it uses its imports and fused types).
#
# The element losses are computed in double whatever the dtype: they need
# log1p, which has no vectorised form here, and double makes a float32 result
# correctly rounded.  Elements are processed in blocks of BINARY_BLOCK along
# the flattened array; each block's loss sum goes to its own slot, so the
# batch sum (done afterwards, in Python, in block order) is the same for any
# thread count.

from libc.math cimport exp, fabs, fmax, log, log1p

cdef enum:
    BINARY_BLOCK = 4096

cdef enum BinaryKind:
    SIGMOID_BCE = 0
    PROBABILITY_BCE = 1


# An element's loss and gradient.  Returned by value: a local written only
# through a pointer would be shared between the threads of a prange.
ctypedef struct LossGrad:
    double loss
    double grad


cdef inline LossGrad elem_sigmoid_bce(double x, double y, double pos_weight) noexcept nogil:
    """PyTorch's BCEWithLogitsLoss of one element, without its weight:
    loss = -(p y log s(x) + (1 - y) log(1 - s(x))) = p y softplus(-x) + (1 - y) softplus(x),
    grad = (1 + (p - 1) y) s(x) - p y, with s the sigmoid and p = pos_weight.

    Both softplus terms are >= 0 and share exp(-|x|), so nothing overflows and
    nothing cancels (PyTorch's form (1-y) x + (1+(p-1)y) softplus(-x) loses a
    small loss to cancellation when x << 0).  A term whose coefficient is 0
    adds 0, so x = +-inf with the matching target gives 0, not NaN."""
    cdef double e = exp(-fabs(x))
    cdef double log1p_e = log1p(e)
    cdef double neg_term = pos_weight * y       # weight of -log s(x) = softplus(-x)
    cdef double pos_term = 1.0 - y              # weight of -log(1 - s(x)) = softplus(x)
    cdef double loss = 0.0
    if neg_term != 0.0:
        loss += neg_term * (fmax(-x, 0.0) + log1p_e)
    if pos_term != 0.0:
        loss += pos_term * (fmax(x, 0.0) + log1p_e)
    if x != x:
        loss = x                                # NaN in, NaN out
    cdef double sigmoid = 1.0 / (1.0 + e) if x >= 0.0 else e / (1.0 + e)
    return LossGrad(loss, (1.0 + (pos_weight - 1.0) * y) * sigmoid - neg_term)


cdef inline LossGrad elem_probability_bce(double p, double y) noexcept nogil:
    """PyTorch's BCELoss of one element, without its weight: each log clamped
    at -100, so p = 0 or 1 gives a finite loss; the gradient is PyTorch's
    (p - y) / max(p (1 - p), 1e-12)."""
    cdef double log_p = fmax(log(p), -100.0)
    cdef double log_not_p = fmax(log1p(-p), -100.0)
    return LossGrad(-(y * log_p + (1.0 - y) * log_not_p), (p - y) / fmax(p * (1.0 - p), 1e-12))


def binary_blocks(
    int kind, const floating[::1] values, const target_t[::1] targets,
    const floating[:, :] weight, const floating[:] pos_weight, int64_t n_classes,
    floating[::1] grad, floating[::1] loss_out, double[::1] block_loss,
    double grad_scale, int n_threads,
):
    """Over the flattened (rows, n_classes) array: block_loss[b] = the loss sum
    of block b (returned: their fixed-order sum); loss_out (None unless reduction="none") = each element's loss;
    grad (None, or values itself in place) = its gradient times grad_scale.
    weight is a (rows, n_classes) view, broadcast by strides, or None;
    pos_weight has n_classes entries or is None."""
    cdef int64_t n = values.shape[0]
    cdef Py_ssize_t n_blocks = block_loss.shape[0]
    cdef Py_ssize_t b
    cdef int64_t i, start, stop, row, col
    cdef double w, pw, total
    cdef LossGrad element
    cdef bint has_weight = weight is not None
    cdef bint has_pos_weight = pos_weight is not None
    cdef bint has_grad = grad is not None
    cdef bint has_loss_out = loss_out is not None
    with nogil:
        for b in prange(n_blocks, schedule="static", num_threads=n_threads,
                           use_threads_if=n_threads > 1):
            start = <int64_t>b * BINARY_BLOCK
            stop = start + BINARY_BLOCK if start + BINARY_BLOCK < n else n
            row = start // n_classes
            col = start - row * n_classes
            total = 0.0
            for i in range(start, stop):
                w = weight[row, col] if has_weight else 1.0
                if kind == SIGMOID_BCE:
                    pw = pos_weight[col] if has_pos_weight else 1.0
                    element = elem_sigmoid_bce(values[i], targets[i], pw)
                else:
                    element = elem_probability_bce(values[i], targets[i])
                total = total + w * element.loss
                if has_loss_out:
                    loss_out[i] = <floating>(w * element.loss)
                if has_grad:
                    grad[i] = <floating>(w * element.grad * grad_scale)
                col = col + 1
                if col == n_classes:
                    col = 0
                    row = row + 1
            block_loss[b] = total
    return fixed_order_sum(block_loss)


cdef inline double row_categorical_ce_label(
    const floating *probs, floating *grad, int64_t n, int64_t label, double weight,
    double eps, double grad_scale,
) noexcept nogil:
    """-w log(max(p_y, eps)); gradient -w / p_y at the label where p_y >= eps
    (0 where clipped: the clip's derivative), 0 elsewhere."""
    cdef double p = probs[label]
    if grad != NULL:
        memset(grad, 0, <size_t>n * sizeof(floating))
        grad[label] = <floating>(-weight / p * grad_scale if p >= eps else 0.0)
    return -weight * log(fmax(p, eps))


cdef inline double row_categorical_ce_soft(
    const floating *probs, floating *grad, int64_t n, const target_t *target,
    const double *class_weight, double eps, double grad_scale,
) noexcept nogil:
    """-sum_c w_c y_c log(max(p_c, eps)); a class with y_c = 0 adds 0 (also
    where p_c = 0).  Gradient -w_c y_c / p_c where p_c >= eps, else 0."""
    cdef int64_t c
    cdef double p, wy, loss = 0.0
    for c in range(n):
        p = probs[c]
        wy = target[c] if class_weight == NULL else class_weight[c] * target[c]
        if wy != 0.0:
            loss = loss - wy * log(fmax(p, eps))
        if grad != NULL:
            grad[c] = <floating>(-wy / p * grad_scale if (wy != 0.0 and p >= eps) else 0.0)
    return loss


def categorical_ce_label_rows(
    const floating[:, ::1] probs, floating[:, ::1] grad, const int64_t[::1] labels,
    const double[::1] class_weight, double[::1] row_loss, int64_t ignore_index,
    double eps, double grad_scale, int n_threads,
):
    cdef Py_ssize_t i
    cdef Py_ssize_t n_rows = probs.shape[0]
    cdef int64_t n = probs.shape[1]
    if n_rows == 0:
        return 0.0
    cdef const floating *base = &probs[0, 0]
    cdef floating *grad_base = NULL if grad is None else &grad[0, 0]
    cdef const double *cw = NULL if class_weight is None else &class_weight[0]
    cdef floating *grad_row
    with nogil:
        for i in prange(n_rows, schedule="static", num_threads=n_threads,
                           use_threads_if=n_threads > 1):
            grad_row = NULL if grad_base == NULL else grad_base + <int64_t>i * n
            if labels[i] == ignore_index:
                row_loss[i] = 0.0
                if grad_row != NULL:
                    memset(grad_row, 0, <size_t>n * sizeof(floating))
            else:
                row_loss[i] = row_categorical_ce_label(
                    base + <int64_t>i * n, grad_row, n, labels[i],
                    1.0 if cw == NULL else cw[labels[i]], eps, grad_scale)
    return fixed_order_sum(row_loss)


def categorical_ce_soft_rows(
    const floating[:, ::1] probs, floating[:, ::1] grad, const target_t[:, ::1] targets,
    const double[::1] class_weight, double[::1] row_loss, double eps, double grad_scale,
    int n_threads,
):
    cdef Py_ssize_t i
    cdef Py_ssize_t n_rows = probs.shape[0]
    cdef int64_t n = probs.shape[1]
    if n_rows == 0:
        return 0.0
    cdef const floating *base = &probs[0, 0]
    cdef const target_t *target_base = &targets[0, 0]
    cdef floating *grad_base = NULL if grad is None else &grad[0, 0]
    cdef const double *cw = NULL if class_weight is None else &class_weight[0]
    with nogil:
        for i in prange(n_rows, schedule="static", num_threads=n_threads,
                           use_threads_if=n_threads > 1):
            row_loss[i] = row_categorical_ce_soft(
                base + <int64_t>i * n,
                NULL if grad_base == NULL else grad_base + <int64_t>i * n,
                n, target_base + <int64_t>i * n, cw, eps, grad_scale)
    return fixed_order_sum(row_loss)
