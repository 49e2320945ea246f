from rulstm.synthetic.generate import main

main()
