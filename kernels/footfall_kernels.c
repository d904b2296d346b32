/* The engine's inner loop in C: a month's rows summed per group, weighted by their places'
 * shares (insights/summed.py). numpy would gather the rows, widen them to floats and multiply
 * matrices, four passes over memory and a matrix per month; this is one pass over the rows,
 * read where they lie (the node's mapped copy, insights/local_months.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const char *name;
    char kind; /* 'i' signed, 'u' unsigned, 'f' float */
    Py_ssize_t itemsize;
    int ndim;
    int writable;
} Spec;

/* The format's kind: numpy exports int32 as "i", int64 as "l" or "q", uint8 as "B", float64 as "d". */
static char format_kind(const char *format) {
    if (format == NULL) return 'u';
    if (*format == '<' || *format == '=' || *format == '@') format++;
    switch (*format) {
    case 'b': case 'h': case 'i': case 'l': case 'q': return 'i';
    case 'B': case 'H': case 'I': case 'L': case 'Q': return 'u';
    case 'd': return 'f';
    default: return '?';
    }
}

static int get(PyObject *object, Py_buffer *view, const Spec *spec) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (spec->writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: a C-contiguous%s array is needed", spec->name,
                     spec->writable ? ", writable" : "");
        return -1;
    }
    if (view->ndim != spec->ndim || format_kind(view->format) != spec->kind ||
        (spec->itemsize && view->itemsize != spec->itemsize)) {
        PyErr_Format(PyExc_ValueError, "%s: %d dimensions of kind '%c' are needed", spec->name, spec->ndim,
                     spec->kind);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#define ACCUMULATE(TYPE)                                                                     \
    for (Py_ssize_t i = 0; i < n; i++) {                                                     \
        const TYPE *v = (const TYPE *)values.buf + rows_at[i] * width;                       \
        const uint8_t *c = (const uint8_t *)counts.buf + rows_at[i] * width;                 \
        const double s = shares[i];                                                          \
        double *vo = value_out + groups_at[i] * width, *wo = weight_out + groups_at[i] * width, \
               *co = count_out + groups_at[i] * width;                                       \
        for (Py_ssize_t h = 0; h < width; h++) {                                             \
            const double counted = (double)c[h];                                             \
            vo[h] += s * (double)v[h];                                                       \
            wo[h] += s * counted;                                                            \
            co[h] += counted;                                                                \
        }                                                                                    \
    }

PyDoc_STRVAR(weighted_sums_doc,
"weighted_sums(values, counts, rows, groups, shares, value, weight, count)\n--\n\n"
"Add each of the rows (positions in values and counts: int32 or int64 and uint8 arrays of\n"
"(rows, width)) into its group's row of value, weight and count (float64 (groups, width)):\n"
"its values times its share, its counts times its share, and its counts.");

static PyObject *weighted_sums(PyObject *self, PyObject *args) {
    PyObject *objects[8];
    if (!PyArg_UnpackTuple(args, "weighted_sums", 8, 8, &objects[0], &objects[1], &objects[2], &objects[3],
                           &objects[4], &objects[5], &objects[6], &objects[7]))
        return NULL;
    const Spec specs[8] = {
        {"values", 'i', 0, 2, 0},  {"counts", 'u', 1, 2, 0}, {"rows", 'i', 8, 1, 0}, {"groups", 'i', 8, 1, 0},
        {"shares", 'f', 8, 1, 0},  {"value", 'f', 8, 2, 1},  {"weight", 'f', 8, 2, 1}, {"count", 'f', 8, 2, 1},
    };
    Py_buffer views[8];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 8; got++)
        if (get(objects[got], &views[got], &specs[got]) < 0) goto done;
    Py_buffer values = views[0], counts = views[1];
    const Py_ssize_t rows = values.shape[0], width = values.shape[1], n = views[2].shape[0];
    const Py_ssize_t groups = views[5].shape[0];
    if ((values.itemsize != 4 && values.itemsize != 8) || counts.shape[0] != rows || counts.shape[1] != width ||
        views[3].shape[0] != n || views[4].shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "weighted_sums: values, counts, rows, groups and shares do not match");
        goto done;
    }
    for (int out = 5; out < 8; out++) {
        if (views[out].shape[0] != groups || views[out].shape[1] != width) {
            PyErr_SetString(PyExc_ValueError, "weighted_sums: value, weight and count must be (groups, width)");
            goto done;
        }
    }
    const int64_t *rows_at = views[2].buf, *groups_at = views[3].buf;
    const double *shares = views[4].buf;
    double *value_out = views[5].buf, *weight_out = views[6].buf, *count_out = views[7].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rows_at[i] < 0 || rows_at[i] >= rows || groups_at[i] < 0 || groups_at[i] >= groups) {
            PyErr_SetString(PyExc_IndexError, "weighted_sums: a row or a group out of range");
            goto done;
        }
    }
    if (values.itemsize == 4) {
        ACCUMULATE(int32_t)
    } else {
        ACCUMULATE(int64_t)
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"weighted_sums", weighted_sums, METH_VARARGS, weighted_sums_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "footfall_kernels", "The footfall engine's inner loops in C.", 0, methods,
};

PyMODINIT_FUNC PyInit_footfall_kernels(void) { return PyModuleDef_Init(&module); }
