/*
 * cyce_exp_template.h -- the exps of cyce_exp.h for one type, included once
 * for float and once for double.  The includer defines CYCE_X (the type),
 * CYCE_XBITS (its union with the unsigned bits), CYCE_XINT and CYCE_XUINT
 * (integers of its width), CYCE_XFN(name) (cyce_expf##name or
 * cyce_exp##name), CYCE_XC(name) (its constants in cyce_exp.h) and
 * CYCE_XPOLY(p, r, unit) (p = unit * the Taylor polynomial of exp(r));
 * this file undefines them.  No include guard.
 */

/* The common part: for xc already clamped to [LOWER, UPPER] (or NaN),
 * unit * exp(r) with r = xc - n ln2, and in *k the bits whose low part holds
 * n = round(xc / ln2) (two's complement).  unit is a power of two (1, or
 * 2**-64 for the _nonpos exp): every coefficient is scaled by it exactly, so
 * the result is unit * (the unit = 1 result), bit for bit, while it stays a
 * normal number. */
static inline __attribute__((always_inline)) CYCE_X CYCE_XFN(_reduced)(CYCE_X xc, CYCE_X unit,
                                                                     CYCE_XBITS *k)
{
    k->f = xc * CYCE_XC(LOG2E) + CYCE_XC(ROUND);   /* low bits of k->u hold n */
    CYCE_X n = k->f - CYCE_XC(ROUND);
    CYCE_X r = xc - n * CYCE_XC(LN2_HI);
    r = r - n * CYCE_XC(LN2_LO);
    CYCE_X p;
    CYCE_XPOLY(p, r, unit);
    return p;
}

/* exp(xc) for xc already clamped to [LOWER, UPPER] (or NaN).  At LOWER the
 * result rounds to exactly +0, so -inf needs no select of its own. */
static inline CYCE_X CYCE_XFN(_core)(CYCE_X xc)
{
    CYCE_XBITS k;
    CYCE_X p = CYCE_XFN(_reduced)(xc, 1, &k);
    /* n from about -(2 BIAS) to BIAS + 1: split so each half gives a normal
     * power of two */
    CYCE_XINT ni = (CYCE_XINT)(k.u - CYCE_XC(ROUND_BITS));
    CYCE_XINT n1 = ni >> 1;
    CYCE_XINT n2 = ni - n1;
    CYCE_XBITS s1, s2;
    s1.u = (CYCE_XUINT)(n1 + CYCE_XC(BIAS)) << CYCE_XC(MANTISSA_BITS);
    s2.u = (CYCE_XUINT)(n2 + CYCE_XC(BIAS)) << CYCE_XC(MANTISSA_BITS);
    return (p * s1.f) * s2.f;
}

/* exp(x) for any x. */
static inline CYCE_X CYCE_XFN()(CYCE_X x)
{
    CYCE_X xc = x < CYCE_XC(LOWER) ? CYCE_XC(LOWER) : x;   /* NaN passes through */
    xc = xc > CYCE_XC(UPPER) ? CYCE_XC(UPPER) : xc;
    CYCE_X y = CYCE_XFN(_core)(xc);
    return x > CYCE_XC(UPPER) ? INFINITY : y;
}

/* exp(x) for x <= 0 or NaN (x - max in a softmax), with fewer instructions
 * than the general exp: no overflow handling, and 2**n applied in one
 * multiply.  For x <= 0, n = round(x / ln2) is at least about -2 BIAS, so
 * 2**(n + 64) is a normal number whose bits are one add and one shift of
 * k's; the polynomial is evaluated with every coefficient times 2**-64
 * (exact: powers of two, and every partial result stays normal), which gives
 * 2**-64 * p bit for bit; and 2**-64 p * 2**(n + 64) rounds once, correctly,
 * also where the result is subnormal.  Same results as the _core exp, 6
 * instructions of about 25 fewer per float vector. */
static inline CYCE_X CYCE_XFN(_nonpos)(CYCE_X x)
{
    const CYCE_X down = (CYCE_X)5.42101086242752217e-20;   /* 2**-64, exact in both */
    CYCE_XBITS k, scale;
    CYCE_X p = CYCE_XFN(_reduced)(x < CYCE_XC(LOWER) ? CYCE_XC(LOWER) : x, down, &k);
    /* the low bits of k.u are (1/2 of the ROUND's mantissa) + n; shifted by
     * the mantissa's width only n + 64 + BIAS is left, the exponent field of
     * 2**(n + 64) */
    scale.u = (k.u + (64u + CYCE_XC(BIAS))) << CYCE_XC(MANTISSA_BITS);
    return p * scale.f;
}

#undef CYCE_X
#undef CYCE_XBITS
#undef CYCE_XINT
#undef CYCE_XUINT
#undef CYCE_XFN
#undef CYCE_XC
#undef CYCE_XPOLY
#undef CYCE_XSTEP
