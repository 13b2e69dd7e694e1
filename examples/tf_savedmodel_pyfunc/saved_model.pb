Í

v2.15.0"serve*2.15.0°
;
xPlaceholder*
dtype0*
shape:ÿÿÿÿÿÿÿÿÿ
E
PyFuncPyFuncx*
Tin
2*
Tout
2*
token
pyfunc_0
#
outputIdentityPyFunc*
T0"í